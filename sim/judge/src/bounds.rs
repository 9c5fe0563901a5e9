//! Bound checks: mistakes that show as cost rather than wrong answers. Each has a limit the
//! correct design meets with room to spare, measured on the scenarios (the numbers are in the
//! constants' docs).

use crate::checkers::{Verdict, Violation};
use crate::history::{Event, History};
use chatsim_system::proto::{DeviceId, Millis};
use chatsim_system::Observation;
use std::collections::{BTreeSet, VecDeque};

/// Name of the reconnect-load bound: phones must not retry in lockstep.
pub const RECONNECT_LOAD: &str = "reconnect_load";

/// Reconnect attempts are counted in sliding windows this long.
pub const RECONNECT_BURST_WINDOW_MS: Millis = 2;
/// At least this many reconnect attempts may fall in one window. Measured on reconnect-storm
/// seeds 1..=8: at most 5 with jittered backoff, 15 to 34 when every phone retries after the
/// same fixed delay.
pub const RECONNECT_BURST_FLOOR: usize = 10;
/// On big runs the limit grows with the phones: one in this many may fall in one window.
pub const RECONNECT_BURST_DEVICES_PER: usize = 20;

/// No more than the limit of reconnect attempts (a phone's connection attempts after its first)
/// within any [`RECONNECT_BURST_WINDOW_MS`].
pub fn reconnect_load(h: &History) -> Verdict {
    let devices = h.devices().count();
    let limit = RECONNECT_BURST_FLOOR.max(devices / RECONNECT_BURST_DEVICES_PER);
    let mut first_seen: BTreeSet<DeviceId> = BTreeSet::new();
    let mut window: VecDeque<Millis> = VecDeque::new();
    let mut violations = Vec::new();
    let mut checked = 0;
    // Report each burst once, at its peak, not once per attempt inside it.
    let mut burst: Option<(Millis, usize)> = None;
    for r in &h.records {
        let Event::Device {
            device,
            obs: Observation::Connecting { .. },
        } = &r.event
        else {
            continue;
        };
        if first_seen.insert(*device) {
            continue;
        }
        checked += 1;
        window.push_back(r.t);
        while window
            .front()
            .is_some_and(|&t0| t0 + RECONNECT_BURST_WINDOW_MS <= r.t)
        {
            window.pop_front();
        }
        if window.len() > limit {
            let start = *window.front().expect("non-empty");
            burst = match burst {
                Some((s, n)) if s + RECONNECT_BURST_WINDOW_MS > start || window.len() <= n => {
                    Some((s, n.max(window.len())))
                }
                Some((s, n)) => {
                    violations.push(burst_violation(s, n, limit));
                    Some((start, window.len()))
                }
                None => Some((start, window.len())),
            };
        } else if let Some((s, n)) = burst.take() {
            violations.push(burst_violation(s, n, limit));
        }
    }
    if let Some((s, n)) = burst {
        violations.push(burst_violation(s, n, limit));
    }
    Verdict {
        name: RECONNECT_LOAD,
        holds: violations.is_empty(),
        violations,
        checked,
    }
}

fn burst_violation(at: Millis, n: usize, limit: usize) -> Violation {
    Violation {
        invariant: RECONNECT_LOAD,
        message: None,
        body: None,
        device: None,
        conv: None,
        at: Some(at),
        detail: format!(
            "{n} reconnect attempts within {RECONNECT_BURST_WINDOW_MS} ms from {at} ms (limit {limit}): phones retrying in lockstep"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatsim_system::proto::UserId;

    fn attempts(h: &mut History, times: &[(u32, Millis)]) {
        for &(u, t) in times {
            let device = DeviceId::primary(UserId(u));
            h.observe(t, device, Observation::Connecting { gateway: 0 });
        }
    }

    // Twenty phones retrying in the same millisecond is a burst; the same twenty spread over
    // 100 ms is not, and nobody's first connection counts.
    #[test]
    fn lockstep_reconnects_are_caught_and_jittered_ones_pass() {
        let mut h = History::new(40);
        attempts(&mut h, &(0..40).map(|u| (u, 0)).collect::<Vec<_>>());
        let mut jittered = h.clone();
        attempts(&mut h, &(0..20).map(|u| (u, 1_000)).collect::<Vec<_>>());
        let v = reconnect_load(&h);
        assert!(!v.holds);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert_eq!(v.violations[0].at, Some(1_000));
        assert!(
            v.violations[0].detail.starts_with("20 reconnect attempts"),
            "{}",
            v.violations[0].detail
        );
        attempts(
            &mut jittered,
            &(0..20)
                .map(|u| (u, 1_000 + u64::from(u) * 5))
                .collect::<Vec<_>>(),
        );
        let v = reconnect_load(&jittered);
        assert!(v.holds, "{:?}", v.violations);
        assert_eq!(v.checked, 20);
    }
}
