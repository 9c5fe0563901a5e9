//! Group fan-out: each durable job is worked off in steps (park inbox entries and move the
//! cursor in one storage write, then push), one job at a time per group, and jobs an earlier
//! owner left unfinished are read back from storage.

use super::{Pending, Shard, Timer, STORAGE};
use crate::bugs::Bug;
use crate::limits::STORAGE_RETRY_MS;
use crate::proto::{ConvId, DeviceId, Down, Message, Millis, Rpc, Seq};
use crate::Effect;

/// A group message's fan-out in progress.
#[derive(Clone, Debug, Hash)]
pub(super) struct Job {
    /// The group message, with every member device's sealed key.
    pub(super) msg: Message,
    /// The devices it must reach, fixed when its sequence number was assigned.
    pub(super) devices: Vec<DeviceId>,
    /// The durable cursor: devices before it are done.
    pub(super) next: u32,
    /// A step is out to storage.
    pub(super) stepping: bool,
    /// False for a group read from its log: steps push without parking inbox entries.
    pub(super) park: bool,
    /// Only with `sync-fanout`: the ✓ held back until the job is done.
    pub(super) ack: Option<(DeviceId, u16)>,
}

impl Shard {
    /// Step the oldest unfinished fan-out of `conv`, unless a step is already out.
    pub(super) fn fanout_pump(&mut self, now: Millis, conv: ConvId, out: &mut Vec<Effect>) {
        let step = self.step_devices();
        // One job at a time per group, the oldest first: a job read back after a restart may
        // be older than one already stepping, and then waits for it.
        let range = (conv, 0)..=(conv, Seq::MAX);
        if self.jobs.range(range.clone()).any(|(_, j)| j.stepping) {
            return;
        }
        let Some(fence) = self.fence(conv) else {
            return;
        };
        let Some((&key, job)) = self.jobs.range_mut(range).next() else {
            return;
        };
        job.stepping = true;
        if !job.park {
            // Read from its log: nothing is parked, so the durable cursor is the only record
            // that these devices still need the message. Push first; the cursor moves only
            // once every push of the step is settled ([`Shard::fanout_pushed`]), so a shard
            // that dies in between leaves the step to be pushed again by its successor.
            let from = job.next as usize;
            let to = (from + step).min(job.devices.len());
            let pushes: Vec<(DeviceId, Message)> = job.devices[from.min(to)..to]
                .iter()
                .map(|d| (*d, job.msg.for_device(*d)))
                .collect();
            for (device, msg) in pushes {
                self.track(now, device, msg, false, out);
            }
            return self.fanout_pushed(now, key, out);
        }
        Self::send_step(key, job, step, fence, out);
        self.timers.set(Timer::Fanout(key), now + STORAGE_RETRY_MS);
    }

    /// A push-only step whose pushes are all settled (acked, device not connected, or given
    /// up) writes its cursor; until then it waits.
    pub(super) fn fanout_pushed(&mut self, now: Millis, key: (ConvId, Seq), out: &mut Vec<Effect>) {
        let step = self.step_devices();
        let Some(job) = self.jobs.get(&key).filter(|j| j.stepping && !j.park) else {
            return;
        };
        if self.timers.is_set(&Timer::Fanout(key)) {
            return; // Its cursor write is out already.
        }
        let from = job.next as usize;
        let to = (from + step).min(job.devices.len());
        let pending = job.devices[from.min(to)..to]
            .iter()
            .any(|d| self.deliveries.contains_key(&(*d, key.0, key.1)));
        let Some(fence) = self.fence(key.0).filter(|_| !pending) else {
            return;
        };
        Self::send_step(key, job, step, fence, out);
        self.timers.set(Timer::Fanout(key), now + STORAGE_RETRY_MS);
    }

    /// Devices per fan-out step. With `sync-fanout`, the naive loop: one write per member,
    /// all inside the send path.
    pub(super) fn step_devices(&self) -> usize {
        if self.topo.bugs.has(Bug::SyncFanout) {
            1
        } else {
            self.topo.knobs.fanout_step_devices
        }
    }

    pub(super) fn send_step(
        key: (ConvId, Seq),
        job: &Job,
        step: usize,
        fence: (u16, u64),
        out: &mut Vec<Effect>,
    ) {
        let from = job.next as usize;
        let to = (from + step).min(job.devices.len());
        let rpc = Rpc::FanoutStep {
            fence,
            conv: key.0,
            seq: key.1,
            from: job.next,
            devices: job.devices[from.min(to)..to].to_vec(),
            park: job.park,
        };
        out.push(Effect::Rpc { to: STORAGE, rpc });
    }

    pub(super) fn on_fanout_stepped(
        &mut self,
        now: Millis,
        key: (ConvId, Seq),
        next: u32,
        out: &mut Vec<Effect>,
    ) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        if next <= job.next && !job.devices.is_empty() {
            return; // An answer to a step already counted.
        }
        // A job with devices got past the check above; one without has its cursor at zero.
        assert!(next >= job.next, "a fan-out cursor only moves forward");
        // Each device's own copy, not the whole message (which carries every member's key).
        let parked: Vec<(DeviceId, Message)> = job.devices
            [job.next as usize..(next as usize).min(job.devices.len())]
            .iter()
            .map(|d| (*d, job.msg.for_device(*d)))
            .collect();
        job.next = next;
        job.stepping = false;
        let id = job.msg.id;
        let park = job.park;
        let done = next as usize >= job.devices.len();
        self.timers.cancel(&Timer::Fanout(key));
        // A push-only step was pushed before its cursor moved.
        for (device, msg) in parked.into_iter().filter(|_| park) {
            self.track(now, device, msg, park, out);
        }
        if done {
            if let Some(job) = self.jobs.remove(&key) {
                if let Some((device, gateway)) = job.ack {
                    let sent = Down::Sent {
                        conv: key.0,
                        id,
                        seq: key.1,
                    };
                    Self::to_device(device, gateway, sent, out);
                }
            }
            if let Some(c) = self.convs.get_mut(&key.0) {
                if c.blocked
                    && !self
                        .jobs
                        .range((key.0, 0)..=(key.0, Seq::MAX))
                        .any(|(_, j)| j.ack.is_some())
                {
                    c.blocked = false;
                    self.pump(now, key.0, out);
                }
            }
        }
        self.fanout_pump(now, key.0, out);
    }

    pub(super) fn read_fanouts(
        &mut self,
        now: Millis,
        slot: u16,
        conv: Option<ConvId>,
        after: Option<(ConvId, Seq)>,
        out: &mut Vec<Effect>,
    ) {
        let req = self.request(now, Pending::Fanouts { slot, conv, after });
        let rpc = Rpc::ReadFanouts {
            req,
            shard: slot,
            shards: self.topo.shards,
            conv,
            after,
        };
        out.push(Effect::Rpc { to: STORAGE, rpc });
    }
}
