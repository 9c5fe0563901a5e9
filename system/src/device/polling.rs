//! HTTP-style polling, the design page's first "common mistake", on the same machines: each
//! request is a short connection (its handshake stands for the request and its
//! authentication) that drains the inbox, sends what is queued, and closes once everything it
//! carried is answered. A short poll asks again after an interval; a long poll is held until
//! something is delivered or the hold runs out, and asks again at once. A websocket phone
//! never comes here.

use super::{Device, Link, Timer};
use crate::limits::{
    HEARTBEAT_TIMEOUT_MS, LONG_POLL_HOLD_MS, POLL_LINGER_MS, RECEIPTS_DRAIN_AGAIN_MS,
    SHORT_POLL_INTERVAL_MS,
};
use crate::probe::Probe;
use crate::proto::Millis;
use crate::{DisconnectReason, Effect, Observation, Transport};

impl Device {
    /// This phone's polling transport, or `None` on a persistent connection.
    pub(super) fn polling(&self) -> Option<Transport> {
        match self.topo.transport.of(self.id.user) {
            Transport::Websocket | Transport::Mixed => None,
            t => Some(t),
        }
    }

    /// A request just became ready: arm its deadline.
    pub(super) fn start_request(&mut self, now: Millis) {
        let Some(t) = self.polling() else {
            return;
        };
        self.request_got = false;
        let hold = if t == Transport::LongPoll {
            LONG_POLL_HOLD_MS
        } else {
            HEARTBEAT_TIMEOUT_MS
        };
        self.timers.set(Timer::Hold, now + hold);
    }

    /// Whether the request has nothing left in flight: the drain finished, the outbox is
    /// empty, no fetch, pull, receipt, link or attack awaits an answer, and no drain is due
    /// again at once for receipts still queued (a page brings only some).
    fn request_done(&self, now: Millis) -> bool {
        let drain_again_soon = self
            .timers
            .at(&Timer::Sync)
            .is_some_and(|t| t <= now + RECEIPTS_DRAIN_AGAIN_MS);
        !drain_again_soon
            && self.link == Link::Ready
            && self.drain.is_none()
            && self.outbox.is_empty()
            && self.pulls_due.is_empty()
            && self.attacks_due.is_empty()
            && self.forged.is_empty()
            && !self.timers.any(|t| {
                matches!(
                    t,
                    Timer::Retry(_)
                        | Timer::Gap(_)
                        | Timer::Pull(_)
                        | Timer::Receipt(_)
                        | Timer::Seen(_)
                        | Timer::Drain
                        | Timer::Link
                )
            })
    }

    /// After every input: a request with nothing left in flight closes (a short poll at once,
    /// a long poll once it delivered something), after a linger so its acks leave first.
    pub(super) fn maybe_hang_up(&mut self, now: Millis) {
        let Some(t) = self.polling() else {
            return;
        };
        let answered = t == Transport::ShortPoll || self.request_got;
        if answered && self.request_done(now) {
            self.timers.set_min(Timer::Hangup, now + POLL_LINGER_MS);
        } else {
            self.timers.cancel(&Timer::Hangup);
        }
    }

    pub(super) fn on_hangup(&mut self, now: Millis, out: &mut Vec<Effect>) {
        if self.request_done(now) {
            self.end_request(now, out);
        }
    }

    /// The hold ran out: a long poll with nothing left in flight asks again; anything else
    /// waited too long for an answer, which is a lost connection.
    pub(super) fn on_hold(&mut self, now: Millis, out: &mut Vec<Effect>) {
        if self.link != Link::Ready {
            return;
        }
        if self.polling() == Some(Transport::LongPoll) && self.request_done(now) {
            Self::probe(out, Probe::LongPollHoldExpired);
            self.end_request(now, out);
        } else {
            self.link_lost(now, DisconnectReason::HeartbeatTimeout, true, out);
        }
    }

    /// Close an answered request and schedule the next one.
    fn end_request(&mut self, now: Millis, out: &mut Vec<Effect>) {
        Self::probe(out, Probe::PollClosed);
        out.push(Effect::Disconnect);
        self.link = Link::Down;
        for t in [
            Timer::Heartbeat,
            Timer::Handshake,
            Timer::Sync,
            Timer::Hold,
            Timer::Hangup,
        ] {
            self.timers.cancel(&t);
        }
        Self::observe(
            out,
            Observation::Disconnected {
                reason: DisconnectReason::Polled,
            },
        );
        if self.wants_link(now) {
            let next = match self.polling() {
                Some(Transport::ShortPoll) => SHORT_POLL_INTERVAL_MS,
                _ => 0,
            };
            self.timers.set(Timer::Reconnect, now + next);
        }
    }

    /// The user did something that needs the server (a send): a polling phone between
    /// requests asks now rather than at its next poll.
    pub(super) fn ask_now(&mut self, now: Millis, out: &mut Vec<Effect>) {
        if self.polling().is_some() && self.link == Link::Down && self.wants_link(now) {
            self.timers.cancel(&Timer::Reconnect);
            self.connect(out);
        }
    }
}
