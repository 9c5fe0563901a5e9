//! What a person or a tool reads: the one-screen summary, the JSON object, and the replay log
//! (one history event per line, simulated time first).

use crate::run::RunReport;
use chatsim_judge::{Event, History};
use chatsim_system::Observation;
use std::fmt::Write;

/// Violations listed per invariant in the summary; the JSON has them all.
pub const SUMMARY_VIOLATIONS_MAX: usize = 5;

/// The one-screen summary of a run.
pub fn summary(r: &RunReport) -> String {
    let mut s = String::new();
    let st = &r.stats;
    let _ = writeln!(
        s,
        "chatsim run: {} ({}), seed {}, engine {}",
        r.scenario, r.scenario_path, r.seed, r.engine
    );
    if !r.knobs.is_empty() {
        let _ = writeln!(s, "  buggified: {}", r.knobs.join(" "));
    }
    for skipped in &r.skipped {
        let _ = writeln!(s, "  skipped on {}: {skipped}", r.engine);
    }
    let _ = writeln!(
        s,
        "  {:<20} {:<8} {:>9} {:>11}",
        "invariant", "verdict", "checked", "violations"
    );
    for v in &r.invariants {
        let verdict = if v.holds { "holds" } else { "BROKEN" };
        let _ = writeln!(
            s,
            "  {:<20} {:<8} {:>9} {:>11}",
            v.name,
            verdict,
            v.checked,
            v.violations.len()
        );
    }
    for v in r.invariants.iter().filter(|v| !v.holds) {
        let _ = writeln!(
            s,
            "  {} violations (first {} of {}):",
            v.name,
            SUMMARY_VIOLATIONS_MAX.min(v.violations.len()),
            v.violations.len()
        );
        for x in v.violations.iter().take(SUMMARY_VIOLATIONS_MAX) {
            let _ = writeln!(s, "    - {}", x.detail);
        }
    }
    let _ = writeln!(
        s,
        "  messages: {} sent, {} acked, {} delivered ({} duplicates dropped, {} gaps detected)",
        st.messages_sent,
        st.messages_acked,
        st.messages_delivered,
        st.duplicates_dropped,
        st.gaps_detected
    );
    let _ = writeln!(
        s,
        "  faults: {}   frames: {}   inbox entries written: {}, left: {}   texts stored at the end: {}",
        st.faults, st.frames, st.inbox_written, st.inbox_left, st.bodies_kept
    );
    let speed = if st.wall_seconds > 0.0 {
        st.sim_seconds / st.wall_seconds
    } else {
        0.0
    };
    // Big worlds run slower than real time: "0x" would say nothing.
    let speed = if speed >= 10.0 {
        format!("{speed:.0}x")
    } else {
        format!("{speed:.2}x")
    };
    let _ = writeln!(
        s,
        "  time: {:.1} s simulated in {:.2} s wall ({speed}), judged in {:.2} s ({} history events)",
        st.sim_seconds, st.wall_seconds, st.judge_seconds, st.history_events
    );
    if !r.transports.is_empty() {
        let _ = writeln!(
            s,
            "  what each transport cost (per delivered message; idle: per idle phone):"
        );
        s.push_str(&crate::transport::table(&r.transports));
    }
    let _ = writeln!(s, "  trace hash: {}", r.trace_hash);
    let _ = writeln!(s, "  replay: {}", r.replay);
    let _ = writeln!(s, "  verdict: {}", if r.passed() { "PASS" } else { "FAIL" });
    s
}

/// The run as one JSON object (the same schema `--json` prints).
pub fn json(r: &RunReport) -> String {
    serde_json::to_string_pretty(r).expect("reports are serialisable")
}

fn text(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

/// The history as a readable log, one event per line.
pub fn replay_log(h: &History) -> String {
    let mut s = String::new();
    for r in &h.records {
        let _ = writeln!(s, "{:>9} ms  {}", r.t, record_line(r));
    }
    let _ = writeln!(s, "{:>9} ms  world  run ends", h.end);
    s
}

/// One history record as a line of a replay log, without its time.
pub fn record_line(r: &chatsim_judge::Record) -> String {
    match &r.event {
        Event::Healed => "world  every fault healed".to_string(),
        Event::Fault(f) => format!("world  fault: {f}"),
        Event::Device { device, obs } => {
            let what = match obs {
                Observation::Sent { id, conv, body } => {
                    format!("sends {id} in {conv}: {}", text(body))
                }
                Observation::Acked { id, seq, .. } => format!("sent ✓ {id} as seq {seq}"),
                Observation::Displayed {
                    id,
                    conv,
                    seq,
                    path,
                    body,
                    ..
                } => {
                    format!("shows {id} seq {seq} in {conv} via {path}: {}", text(body))
                }
                Observation::DuplicateDropped { id, seq, path, .. } => {
                    format!("drops duplicate {id} seq {seq} (via {path})")
                }
                Observation::GapDetected { conv, from, to } => {
                    format!("holds back {conv}: gap {from}..={to}")
                }
                Observation::GapFetch { conv, from, to } => {
                    format!("fetches {conv} {from}..={to}")
                }
                Observation::Connecting { gateway } => {
                    format!("connecting to gateway-{}", gateway + 1)
                }
                Observation::Connected { gateway, epoch } => {
                    format!("connected to gateway-{} (epoch {epoch})", gateway + 1)
                }
                Observation::Disconnected { reason } => format!("disconnected ({reason:?})"),
                Observation::DrainComplete => "inbox drained".to_string(),
                Observation::Linked => "linked to its user's account".to_string(),
                Observation::Undecryptable { id, seq, .. } => {
                    format!("cannot open {id} seq {seq}")
                }
                Observation::Refused { reason, id, fin } => {
                    let what = id.map_or_else(String::new, |id| format!(" {id}"));
                    let then = if *fin { ", dropped" } else { ", will retry" };
                    format!("refused{what}: {reason:?}{then}")
                }
                Observation::Woken => "woken by a push".to_string(),
                Observation::Opened { conv: Some(conv) } => format!("opens {conv}"),
                Observation::Opened { conv: None } => "closes the chat".to_string(),
                Observation::Presence {
                    user,
                    online,
                    last_seen,
                    looking,
                } => {
                    let what = if *online {
                        "online".to_string()
                    } else {
                        format!("last seen at {last_seen} ms")
                    };
                    let aside = if *looking { "" } else { " (not looking)" };
                    format!("sees {user} {what}{aside}")
                }
                Observation::Read { conv, upto } => {
                    format!("reads {conv} up to seq {upto}")
                }
                Observation::Receipt { receipt: r } => format!(
                    "learns {} has {} up to seq {} ({:?})",
                    r.reader, r.conv, r.upto, r.kind
                ),
                Observation::Ticks { id, seq, tick, .. } => {
                    let ticks = match tick {
                        chatsim_system::proto::ReceiptKind::Delivered => "✓✓",
                        chatsim_system::proto::ReceiptKind::Read => "✓✓ read",
                    };
                    format!("shows {ticks} on {id} seq {seq}")
                }
                Observation::ChangeAsked { id, conv, op } => {
                    format!("asks for {id} in {conv}: {op:?}")
                }
                Observation::MembersChanged { conv, seq, members } => {
                    let shown: Vec<String> =
                        members.iter().take(8).map(ToString::to_string).collect();
                    let more = members.len().saturating_sub(shown.len());
                    let tail = if more > 0 {
                        format!(" +{more}")
                    } else {
                        String::new()
                    };
                    format!("{conv} members at seq {seq}: {}{tail}", shown.join(","))
                }
                Observation::Attacked { attack } => {
                    format!("ATTACKS: {}", attack.describe(*device))
                }
                Observation::Pulled { conv, last } => {
                    format!("is told {conv} reaches seq {last}")
                }
                Observation::Fetched { id, conv, seq } => {
                    format!("gets {id} seq {seq} of {conv}")
                }
            };
            format!("{device}  {what}")
        }
    }
}
