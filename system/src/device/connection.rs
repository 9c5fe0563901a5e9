//! The device's link to a gateway: whether it wants one, connecting with jittered backoff,
//! losing it, the welcome that makes it ready (and everything a fresh connection sends again:
//! drain, pulls, presence watch, owed receipts, the outbox), and the presence subscription.

use super::{Device, Link, Timer};
use crate::bugs::Bug;
use crate::limits::{
    BACKOFF_DOUBLINGS_MAX, DRAIN_RETRY_MS, INBOX_SYNC_MS, LINK_RETRY_MS, PRESENCE_RENEW_MS,
    RECONNECT_BACKOFF_MS_MAX, RECONNECT_BACKOFF_MS_MIN,
};
use crate::probe::Probe;
use crate::proto::{ConvId, InboxCursor, Millis, Up, UserId};
use crate::{DisconnectReason, Effect, Observation};
use rand::Rng;
use std::collections::BTreeSet;

impl Device {
    /// Whether the phone wants a connection now: online, and in the foreground or woken.
    pub(super) fn wants_link(&self, now: Millis) -> bool {
        self.linked
            && self.online
            && (!self.background || self.woken_until.is_some_and(|t| now < t))
    }

    pub(super) fn schedule_reconnect(&mut self, now: Millis) {
        if self.wants_link(now) {
            let d = if self.bug(Bug::NoReconnectJitter) {
                let shift = self.reconnect_failures.min(BACKOFF_DOUBLINGS_MAX);
                RECONNECT_BACKOFF_MS_MIN
                    .saturating_mul(1 << shift)
                    .min(RECONNECT_BACKOFF_MS_MAX)
            } else {
                self.backoff(
                    RECONNECT_BACKOFF_MS_MIN,
                    RECONNECT_BACKOFF_MS_MAX,
                    self.reconnect_failures,
                )
            };
            self.reconnect_failures = self.reconnect_failures.saturating_add(1);
            self.timers.set(Timer::Reconnect, now + d);
        }
    }

    pub(super) fn link_lost(
        &mut self,
        now: Millis,
        reason: DisconnectReason,
        close: bool,
        out: &mut Vec<Effect>,
    ) {
        if self.link == Link::Down {
            return;
        }
        if close {
            out.push(Effect::Disconnect);
        }
        self.link = Link::Down;
        if self.drain.is_some() && self.bug(Bug::EarlyQueueEmpty) {
            // The drain was cut short, yet the app marks its backlog done.
            self.believes_drained = true;
            Self::observe(out, Observation::DrainComplete);
        }
        self.drain = None;
        for t in [
            Timer::Heartbeat,
            Timer::Handshake,
            Timer::Drain,
            Timer::Sync,
            Timer::Hold,
            Timer::Hangup,
        ] {
            self.timers.cancel(&t);
        }
        Self::observe(out, Observation::Disconnected { reason });
        self.schedule_reconnect(now);
    }

    pub(super) fn connect(&mut self, out: &mut Vec<Effect>) {
        self.gateway = self.rng.gen_range(0..self.topo.gateways.max(1));
        self.link = Link::Connecting;
        let gateway = self.gateway;
        Self::observe(out, Observation::Connecting { gateway });
        out.push(Effect::Connect { gateway });
    }

    pub(super) fn start_drain(
        &mut self,
        now: Millis,
        after: Option<InboxCursor>,
        out: &mut Vec<Effect>,
    ) {
        if after.is_none() {
            self.drain_pages = 0;
            self.flush_seen(out);
        }
        self.drain = Some(after);
        out.push(Effect::Up(Up::Drain { after }));
        self.timers.set(Timer::Drain, now + DRAIN_RETRY_MS);
    }

    pub(super) fn on_welcome(&mut self, now: Millis, epoch: u64, out: &mut Vec<Effect>) {
        if self.link != Link::Handshaking || epoch != self.epoch {
            return;
        }
        self.link = Link::Ready;
        self.reconnect_failures = 0;
        self.timers.cancel(&Timer::Handshake);
        self.start_request(now);
        Self::observe(
            out,
            Observation::Connected {
                gateway: self.gateway,
                epoch,
            },
        );
        if !self.link_stored {
            out.push(Effect::Up(Up::Link));
            self.timers.set(Timer::Link, now + LINK_RETRY_MS);
        }
        if self.believes_drained {
            // "Queue empty" already fired, so the app sees no backlog to fetch.
            self.timers.set(Timer::Sync, now + INBOX_SYNC_MS);
        } else {
            self.start_drain(now, None, out);
        }
        // Groups read from their log parked nothing for us while we were away: ask how far
        // each reaches, and fetch the rest.
        let over = self.topo.fanout_on_read_over as usize;
        let pulls: Vec<ConvId> = self
            .convs
            .iter()
            .filter(|(c, v)| c.is_group() && v.joined && over > 0 && v.members.len() > over)
            .map(|(c, _)| *c)
            .collect();
        for conv in pulls {
            self.pull(now, conv, out);
        }
        // A new connection may reach a session service that forgot us: watch again (or end
        // a watch left over from a chat closed while we were away).
        if self.watched().is_some() || self.subscribed {
            self.subscribe(now, out);
        }
        // Receipts the server has not stored go again too.
        let owed: BTreeSet<ConvId> = self
            .receipts_out
            .iter()
            .filter(|(_, r)| r.want > r.acked)
            .map(|((c, _), _)| *c)
            .collect();
        for conv in owed {
            Self::probe(out, Probe::ReceiptResent);
            self.timers.set(Timer::Receipt(conv), now);
        }
        // Everything unacknowledged goes again on the new connection, same ids.
        if self.outbox.values().any(|o| o.transmitted) {
            Self::probe(out, Probe::OutboxResentAfterReconnect);
        }
        for o in self.outbox.values_mut() {
            o.transmitted = false;
        }
        self.fill_window(now, out);
    }

    /// Whose presence the open chat shows: the peer of an open direct conversation.
    pub(super) fn watched(&self) -> Option<UserId> {
        self.open.and_then(|c| c.direct_peer(self.id.user))
    }

    /// Tell the session service whom we watch (renewing the lease while a chat is open).
    pub(super) fn subscribe(&mut self, now: Millis, out: &mut Vec<Effect>) {
        if self.link != Link::Ready {
            return; // The welcome subscribes.
        }
        let user = self.watched();
        out.push(Effect::Up(Up::Subscribe { user }));
        self.subscribed = user.is_some();
        if user.is_some() {
            self.timers.set(Timer::Presence, now + PRESENCE_RENEW_MS);
        } else {
            self.timers.cancel(&Timer::Presence);
        }
    }
}
