//! What each transport costs in a run (scenarios with `topology.transport` other than
//! `websocket`): delivery latency, requests and link bytes per delivered message, and what an
//! idle user's phone costs the servers in an hour. Read off the history (requests are the
//! phones' `Connected` observations: each poll is one) and the frame log (bytes and frames on
//! the phones' links), per transport of the receiving or idle device.

use crate::wire::FrameRecord;
use chatsim_judge::{Event, History};
use chatsim_system::proto::{DeviceId, Host, Millis, MsgId};
use chatsim_system::{Observation, Transport};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One transport's figures in a run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TransportCost {
    /// `websocket`, `long-poll` or `short-poll`.
    pub transport: &'static str,
    /// Devices on it.
    pub devices: usize,
    /// Of those, devices that sent and showed nothing all run.
    pub idle_devices: usize,
    /// (message, device) first displays on its devices.
    pub delivered: usize,
    /// Send to first display on its devices, median (ms).
    pub display_p50_ms: f64,
    /// Send to first display, 99th percentile (ms).
    pub display_p99_ms: f64,
    /// Requests its devices made (connections: a poll is one; a websocket reconnects only).
    pub requests: usize,
    /// Requests per delivered message.
    pub requests_per_delivery: f64,
    /// Bytes on its devices' links, both ways, per delivered message (absent without a frame
    /// log, as in `--no-report` runs).
    pub link_bytes_per_delivery: Option<f64>,
    /// Requests one idle device makes in an hour.
    pub idle_requests_per_hour: f64,
    /// Frames one idle device's link carries in an hour, both ways: the servers' work for a
    /// user who does nothing (absent without a frame log).
    pub idle_frames_per_hour: Option<f64>,
    /// Bytes one idle device's link carries in an hour, both ways (absent without a frame
    /// log).
    pub idle_bytes_per_hour: Option<f64>,
}

/// The `p` quantile of `v` (nearest rank; 0 for none), as lessons and transport tables show.
pub(crate) fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// The figures per transport, in the order websocket, long-poll, short-poll (those in use).
pub fn costs(
    h: &History,
    frames: &[FrameRecord],
    transport: Transport,
    end: Millis,
) -> Vec<TransportCost> {
    let devices: Vec<DeviceId> = (0..h.users)
        .flat_map(|u| {
            (0..h.devices_per_user.max(1)).map(move |index| DeviceId {
                user: chatsim_system::proto::UserId(u),
                index,
            })
        })
        .collect();
    let of = |d: &DeviceId| transport.of(d.user);
    let mut sent: BTreeMap<MsgId, Millis> = BTreeMap::new();
    let mut active: BTreeSet<DeviceId> = BTreeSet::new();
    let mut shown: BTreeSet<(DeviceId, MsgId)> = BTreeSet::new();
    let mut latency: BTreeMap<Transport, Vec<f64>> = BTreeMap::new();
    let mut requests: BTreeMap<DeviceId, usize> = BTreeMap::new();
    for r in &h.records {
        let Event::Device { device, obs } = &r.event else {
            continue;
        };
        match obs {
            Observation::Sent { id, .. } => {
                active.insert(*device);
                sent.entry(*id).or_insert(r.t);
            }
            Observation::Displayed { id, .. } => {
                active.insert(*device);
                if let (true, Some(t0)) = (shown.insert((*device, *id)), sent.get(id)) {
                    latency
                        .entry(of(device))
                        .or_default()
                        .push(r.t.saturating_sub(*t0) as f64);
                }
            }
            Observation::Connected { .. } => *requests.entry(*device).or_default() += 1,
            _ => {}
        }
    }
    let mut bytes: BTreeMap<DeviceId, (u64, u64)> = BTreeMap::new();
    for f in frames {
        for host in [f.from, f.to] {
            if let Host::Device(d) = host {
                let e = bytes.entry(d).or_default();
                e.0 += u64::from(f.bytes);
                e.1 += 1;
            }
        }
    }
    let hours = (end.max(1) as f64) / 3_600_000.0;
    let mut out = Vec::new();
    for t in [
        Transport::Websocket,
        Transport::LongPoll,
        Transport::ShortPoll,
    ] {
        let mine: Vec<&DeviceId> = devices.iter().filter(|d| of(d) == t).collect();
        if mine.is_empty() {
            continue;
        }
        let idle: Vec<&&DeviceId> = mine.iter().filter(|d| !active.contains(d)).collect();
        let delivered = shown.iter().filter(|(d, _)| of(d) == t).count();
        let reqs: usize = mine
            .iter()
            .map(|d| requests.get(d).copied().unwrap_or(0))
            .sum();
        let per = |x: f64| x / delivered.max(1) as f64;
        let link: u64 = mine.iter().map(|d| bytes.get(d).map_or(0, |b| b.0)).sum();
        let idle_reqs: usize = idle
            .iter()
            .map(|d| requests.get(d).copied().unwrap_or(0))
            .sum();
        let idle_frames: u64 = idle.iter().map(|d| bytes.get(d).map_or(0, |b| b.1)).sum();
        let idle_bytes: u64 = idle.iter().map(|d| bytes.get(d).map_or(0, |b| b.0)).sum();
        let per_idle_hour = |x: f64| x / idle.len().max(1) as f64 / hours;
        let logged = !frames.is_empty();
        let lat = latency.remove(&t).unwrap_or_default();
        out.push(TransportCost {
            transport: t.name(),
            devices: mine.len(),
            idle_devices: idle.len(),
            delivered,
            display_p50_ms: percentile(lat.clone(), 0.5),
            display_p99_ms: percentile(lat, 0.99),
            requests: reqs,
            requests_per_delivery: per(reqs as f64),
            link_bytes_per_delivery: logged.then(|| per(link as f64)),
            idle_requests_per_hour: per_idle_hour(idle_reqs as f64),
            idle_frames_per_hour: logged.then(|| per_idle_hour(idle_frames as f64)),
            idle_bytes_per_hour: logged.then(|| per_idle_hour(idle_bytes as f64)),
        });
    }
    out
}

/// The columns of a transport table, for the terminal and the report page alike.
pub const COLUMNS: [&str; 10] = [
    "transport",
    "devices",
    "delivered",
    "p50 ms",
    "p99 ms",
    "req/deliv",
    "bytes/deliv",
    "idle req/h",
    "idle frames/h",
    "idle bytes/h",
];

/// One transport's cells, in [`COLUMNS`] order ("-" where the frame log was not kept).
pub fn cells(c: &TransportCost) -> [String; 10] {
    let opt = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
    [
        c.transport.to_string(),
        c.devices.to_string(),
        c.delivered.to_string(),
        format!("{:.0}", c.display_p50_ms),
        format!("{:.0}", c.display_p99_ms),
        format!("{:.2}", c.requests_per_delivery),
        opt(c.link_bytes_per_delivery),
        format!("{:.0}", c.idle_requests_per_hour),
        opt(c.idle_frames_per_hour),
        opt(c.idle_bytes_per_hour),
    ]
}

/// The figures as a table for the terminal.
pub fn table(costs: &[TransportCost]) -> String {
    let mut s = String::new();
    let line = |s: &mut String, row: &[String]| {
        s.push_str(&format!("  {:<11}", row[0]));
        for cell in &row[1..] {
            s.push_str(&format!(" {cell:>12}"));
        }
        s.push('\n');
    };
    line(&mut s, &COLUMNS.map(str::to_string));
    for c in costs {
        line(&mut s, &cells(c));
    }
    s
}
