//! Knobs: the bounds a run may shrink, BUGGIFY-style (FoundationDB's name for it).
//!
//! A bound that is rarely reached hides the code behind it: with 32 entries a page, an inbox
//! drain of more than two pages needs a phone away through a flood; with 64 devices a fan-out
//! step, a step retried part-way needs a crash inside a big group's fan-out. A simulation that
//! shrinks such bounds, per seed, makes those branches common. Every knob here is a value the
//! design must work with (a page of one entry is slow, never wrong), so every invariant still
//! holds; only the time a promise takes may grow, and the judges widen exactly the bounds a knob
//! touches. The defaults are the values in [`crate::limits`]; reference and bench runs keep them.
//!
//! The machines read knobs from their [`crate::Deployment`]; the engines draw them per seed
//! (sim/world's plan) and print them beside the plan.

use crate::limits;
use crate::proto::Millis;
use serde::{Deserialize, Serialize};

/// Per-run values of the bounds a BUGGIFY draw may shrink; [`Knobs::default`] is the design's.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, Serialize, Deserialize)]
pub struct Knobs {
    /// Inbox entries per drain page ([`limits::INBOX_PAGE_ENTRIES`]).
    pub inbox_page_entries: u32,
    /// Devices one group fan-out step covers ([`limits::FANOUT_STEP_DEVICES`]).
    pub fanout_step_devices: usize,
    /// Messages a device keeps unacknowledged at once ([`limits::OUTBOX_IN_FLIGHT_MAX`]).
    pub outbox_in_flight_max: usize,
    /// Largest range one gap fetch asks for ([`limits::GAP_FETCH_SEQS_MAX`]).
    pub gap_fetch_seqs_max: u64,
    /// Receipts handed out with one drain page ([`limits::RECEIPTS_PAGE_ENTRIES_MAX`]).
    pub receipts_page_entries_max: usize,
    /// Inbox entries per page of a restarted shard's sweep ([`limits::SWEEP_PAGE_ENTRIES`]).
    pub sweep_page_entries: u32,
    /// Sends a shard queues per conversation before refusing `Busy`
    /// ([`limits::CONV_QUEUE_SENDS_MAX`]).
    pub conv_queue_sends_max: usize,
    /// Bytes per page of operations a replica hands its coordinator
    /// ([`limits::OPS_PAGE_BYTES`]).
    pub ops_page_bytes: usize,
    /// Storage's (and each replica's) group-commit delay: an fsync that takes its time
    /// ([`limits::STORAGE_SYNC_MS`]).
    pub storage_sync_ms: Millis,
}

impl Default for Knobs {
    fn default() -> Knobs {
        Knobs {
            inbox_page_entries: limits::INBOX_PAGE_ENTRIES,
            fanout_step_devices: limits::FANOUT_STEP_DEVICES,
            outbox_in_flight_max: limits::OUTBOX_IN_FLIGHT_MAX,
            gap_fetch_seqs_max: limits::GAP_FETCH_SEQS_MAX,
            receipts_page_entries_max: limits::RECEIPTS_PAGE_ENTRIES_MAX,
            sweep_page_entries: limits::SWEEP_PAGE_ENTRIES,
            conv_queue_sends_max: limits::CONV_QUEUE_SENDS_MAX,
            ops_page_bytes: limits::OPS_PAGE_BYTES,
            storage_sync_ms: limits::STORAGE_SYNC_MS,
        }
    }
}

/// One knob's name, its value in a run, and the design's value: what a plan prints.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, Serialize)]
pub struct KnobValue {
    /// The knob's name (its field).
    pub name: &'static str,
    /// Its value in this run.
    pub value: u64,
    /// The design's value.
    pub default: u64,
}

impl Knobs {
    /// Every knob as (name, value, default), in field order.
    pub fn values(&self) -> Vec<KnobValue> {
        let d = Knobs::default();
        let pair = |name, value: u64, default: u64| KnobValue {
            name,
            value,
            default,
        };
        let n = |v: usize| v as u64;
        vec![
            pair(
                "inbox_page_entries",
                self.inbox_page_entries.into(),
                d.inbox_page_entries.into(),
            ),
            pair(
                "fanout_step_devices",
                n(self.fanout_step_devices),
                n(d.fanout_step_devices),
            ),
            pair(
                "outbox_in_flight_max",
                n(self.outbox_in_flight_max),
                n(d.outbox_in_flight_max),
            ),
            pair(
                "gap_fetch_seqs_max",
                self.gap_fetch_seqs_max,
                d.gap_fetch_seqs_max,
            ),
            pair(
                "receipts_page_entries_max",
                n(self.receipts_page_entries_max),
                n(d.receipts_page_entries_max),
            ),
            pair(
                "sweep_page_entries",
                self.sweep_page_entries.into(),
                d.sweep_page_entries.into(),
            ),
            pair(
                "conv_queue_sends_max",
                n(self.conv_queue_sends_max),
                n(d.conv_queue_sends_max),
            ),
            pair(
                "ops_page_bytes",
                n(self.ops_page_bytes),
                n(d.ops_page_bytes),
            ),
            pair("storage_sync_ms", self.storage_sync_ms, d.storage_sync_ms),
        ]
    }

    /// The knobs that differ from the design's, as `name=value` words (empty for the design).
    pub fn changed(&self) -> Vec<String> {
        self.values()
            .into_iter()
            .filter(|k| k.value != k.default)
            .map(|k| format!("{}={}", k.name, k.value))
            .collect()
    }

    /// Whether every knob has the design's value.
    pub fn is_default(&self) -> bool {
        *self == Knobs::default()
    }

    /// Whether the values can run at all: every page, step and window holds at least one item
    /// (a zero would stall the system, which is not a bound shrunk but a system broken).
    pub fn valid(&self) -> Result<(), &'static str> {
        // A sync may take no time at all; every other knob counts items or bytes.
        match self
            .values()
            .into_iter()
            .find(|k| k.name != "storage_sync_ms" && k.value == 0)
        {
            Some(k) => Err(k.name),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_design_and_changes_are_named() {
        let d = Knobs::default();
        assert!(d.is_default() && d.changed().is_empty() && d.valid().is_ok());
        let k = Knobs {
            inbox_page_entries: 2,
            storage_sync_ms: 90,
            ..d
        };
        assert_eq!(k.changed(), ["inbox_page_entries=2", "storage_sync_ms=90"]);
        assert!(!k.is_default());
        let zero = Knobs {
            fanout_step_devices: 0,
            ..d
        };
        assert_eq!(zero.valid(), Err("fanout_step_devices"));
    }
}
