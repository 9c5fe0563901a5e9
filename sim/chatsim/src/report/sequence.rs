//! The message sequence diagram: hosts and devices as lanes, frames as arrows in simulated
//! time (down the page), faults marked, the frames of one message highlighted. It draws a
//! bounded window so long runs stay readable, and says what it left out. Plain SVG, written by
//! hand: plotters has no notion of lanes and arrows.

use crate::wire::FrameRecord;
use chatsim_judge::{Event, Fault, History};
use chatsim_system::proto::{ConvId, Host, Millis, MsgId, Seq};
use chatsim_system::Observation;
use std::collections::BTreeSet;
use std::fmt::Write;

/// Arrows drawn at most.
pub const SEQUENCE_FRAMES_MAX: usize = 120;
/// Simulated time shown around the chosen message's frames, either side (ms).
pub const SEQUENCE_MARGIN_MS: Millis = 300;

const LANE_PX: f64 = 150.0;
const ROW_PX: f64 = 22.0;
const TOP_PX: f64 = 70.0;

/// The message a diagram follows: its id and where it sits.
#[derive(Clone, Debug)]
pub struct Focus {
    /// The message id, as printed (`u1.d0#3`).
    pub id: String,
    /// Its (conversation, seq) once known.
    pub key: Option<(ConvId, Seq)>,
}

/// Find where a message id sits, from the history.
pub fn focus(h: &History, id: &str) -> Focus {
    let key = h.records.iter().find_map(|r| match &r.event {
        Event::Device {
            obs: Observation::Acked { id: m, conv, seq },
            ..
        }
        | Event::Device {
            obs: Observation::Displayed {
                id: m, conv, seq, ..
            },
            ..
        } if m.to_string() == id => Some((*conv, *seq)),
        _ => None,
    });
    Focus {
        id: id.to_string(),
        key,
    }
}

fn concerns(f: &FrameRecord, focus: &Focus) -> bool {
    f.msg.is_some_and(|m: MsgId| m.to_string() == focus.id)
        || (f.key.is_some() && f.key == focus.key)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub(crate) fn fault_hosts(f: &Fault) -> Vec<Host> {
    match f {
        Fault::Kill(h)
        | Fault::Restart(h)
        | Fault::Clog(h)
        | Fault::Unclog(h)
        | Fault::LatencySpike(h)
        | Fault::LatencySpikeEnd(h)
        | Fault::DiskSlow(h)
        | Fault::DiskSlowEnd(h)
        | Fault::DiskFull(h)
        | Fault::DiskFullEnd(h) => vec![*h],
        Fault::Partition(a, b)
        | Fault::PartitionHealed(a, b)
        | Fault::PartitionOneway(a, b)
        | Fault::PartitionOnewayHealed(a, b) => a.iter().chain(b).copied().collect(),
        Fault::DeviceOffline(d)
        | Fault::DeviceOnline(d)
        | Fault::DeviceDrop(d)
        | Fault::DeviceSilent(d)
        | Fault::DeviceUnsilent(d)
        | Fault::DeviceBlackhole(d)
        | Fault::DeviceBlackholeEnd(d) => {
            vec![Host::Device(*d)]
        }
    }
}

/// Lane order: devices first, then gateways, the session service, shards, storage, its
/// replicas, the push provider.
fn lane_rank(h: &Host) -> (u8, Host) {
    let r = match h {
        Host::Device(_) => 0,
        Host::Gateway(_) => 1,
        Host::Session => 2,
        Host::Shard(_) => 3,
        Host::Storage(_) => 4,
        Host::Replica(_) => 5,
        Host::Push => 6,
    };
    (r, *h)
}

/// The diagram as SVG text, following `focus` (or, with none, the first frames of the run).
pub fn sequence_svg(
    frames: &[FrameRecord],
    h: &History,
    focus: Option<&Focus>,
    title: &str,
) -> String {
    let chosen: Vec<&FrameRecord> = match focus {
        Some(fc) => frames.iter().filter(|f| concerns(f, fc)).collect(),
        None => frames.iter().take(SEQUENCE_FRAMES_MAX).collect(),
    };
    let total = chosen.len();
    let shown: Vec<&FrameRecord> = chosen.into_iter().take(SEQUENCE_FRAMES_MAX).collect();
    let (t_lo, t_hi) = match (
        shown.iter().map(|f| f.sent_ms).min(),
        shown.iter().map(|f| f.recv_ms).max(),
    ) {
        (Some(a), Some(b)) => (a.saturating_sub(SEQUENCE_MARGIN_MS), b + SEQUENCE_MARGIN_MS),
        _ => (0, h.end),
    };
    let mut lanes: BTreeSet<(u8, Host)> = shown
        .iter()
        .flat_map(|f| [lane_rank(&f.from), lane_rank(&f.to)])
        .collect();
    let faults: Vec<(Millis, &Fault)> = h
        .records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Fault(f) if r.t >= t_lo && r.t <= t_hi => Some((r.t, f)),
            _ => None,
        })
        .collect();
    for (_, f) in &faults {
        lanes.extend(fault_hosts(f).iter().map(lane_rank));
    }
    let lanes: Vec<Host> = lanes.into_iter().map(|(_, h)| h).collect();
    let x = |h: &Host| 90.0 + LANE_PX * lanes.iter().position(|l| l == h).unwrap_or(0) as f64;
    // Rows, not a linear time scale: every event gets its own row so labels never overlap, and
    // the time is written beside each one.
    let mut times: Vec<Millis> = shown
        .iter()
        .flat_map(|f| [f.sent_ms, f.recv_ms])
        .chain(faults.iter().map(|(t, _)| *t))
        .collect();
    times.sort();
    times.dedup();
    let y = |t: Millis| TOP_PX + ROW_PX * times.binary_search(&t).unwrap_or_else(|i| i) as f64;
    let height = TOP_PX + ROW_PX * (times.len() as f64 + 2.0) + 40.0;
    let width = (180.0 + LANE_PX * lanes.len() as f64).max(600.0);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans, sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r##"<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="7" refY="3" orient="auto"><path d="M0,0 L7,3 L0,6 z" fill="#555"/></marker><marker id="arrow-hot" markerWidth="8" markerHeight="8" refX="7" refY="3" orient="auto"><path d="M0,0 L7,3 L0,6 z" fill="#c00"/></marker></defs>"##
    );
    let _ = writeln!(
        s,
        r##"<rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="14" font-weight="bold">{}</text>"##,
        esc(title)
    );
    let left_out = total.saturating_sub(shown.len());
    let note = match focus {
        Some(fc) => format!(
            "following {} from {t_lo} ms to {t_hi} ms; {left_out} of its {total} frames left out; other traffic, and frames lost in flight, not drawn",
            fc.id
        ),
        None => format!("the first {} frames of the run; the rest left out", shown.len()),
    };
    let _ = writeln!(
        s,
        r##"<text x="10" y="38" fill="#555">{}</text>"##,
        esc(&note)
    );
    for h in &lanes {
        let lx = x(h);
        let _ = writeln!(
            s,
            r##"<text x="{lx}" y="58" text-anchor="middle" font-weight="bold">{}</text><line x1="{lx}" y1="62" x2="{lx}" y2="{}" stroke="#bbb" stroke-dasharray="4 3"/>"##,
            esc(&h.to_string()),
            height - 20.0
        );
    }
    for t in &times {
        let _ = writeln!(
            s,
            r##"<text x="8" y="{}" fill="#888">{t} ms</text>"##,
            y(*t) + 4.0
        );
    }
    for (t, f) in &faults {
        let yy = y(*t);
        for h in fault_hosts(f) {
            let lx = x(&h);
            let _ = writeln!(
                s,
                r##"<rect x="{}" y="{}" width="120" height="16" fill="#fde2c0" stroke="#c77"/><text x="{}" y="{}" fill="#a40">⚡ {}</text>"##,
                lx - 60.0,
                yy - 11.0,
                lx - 56.0,
                yy + 1.0,
                esc(&f.to_string())
            );
        }
    }
    for f in &shown {
        let hot = focus.is_some_and(|fc| concerns(f, fc));
        let (color, marker) = if hot {
            ("#c00", "arrow-hot")
        } else {
            ("#555", "arrow")
        };
        let (x1, x2, y1, y2) = (x(&f.from), x(&f.to), y(f.sent_ms), y(f.recv_ms));
        let label = match f.msg {
            Some(m) => format!("{} [{m}]", f.label),
            None => f.label.clone(),
        };
        let _ = writeln!(
            s,
            r#"<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="{color}" stroke-width="1.4" marker-end="url(#{marker})"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" fill="{color}" text-anchor="middle">{}</text>"#,
            (x1 + x2) / 2.0,
            (y1 + y2) / 2.0 - 3.0,
            esc(&label)
        );
    }
    s.push_str("</svg>\n");
    s
}
