//! The bug zoo's switches (the phone's, the shard's and storage's), each pinned to its exact
//! misbehaviour. A zoo bug is worth having only if it does the one wrong thing its entry
//! describes: the gate that runs each bug's scenario sees *that* a checker fails, not *why*,
//! so a branch mutated into some other wrong (or into no bug at all) went unnoticed. Each test
//! here was written against mutants that survived the mutation sample inside a zoo branch
//! (reports/mutants/) and names them; the phone's are driven on one phone, frame by frame, the
//! servers' through the in-memory cluster.

mod common;

use chatsim_system::bugs::{Bug, Bugs};
use chatsim_system::device::Device;
use chatsim_system::e2e::{device_keypair, seal, Bundle};
use chatsim_system::limits::{
    GAP_REPAIR_DELAY_MS, GAP_RETRY_MS, INBOX_SYNC_MS, OUTBOX_RETRY_MS_MIN, RECEIPT_DELAY_MS,
};
use chatsim_system::proto::{
    ConvId, DeviceId, Down, Message, Millis, MsgId, Path, ReceiptKind, Seq, Up, UserId,
};
use chatsim_system::{Action, Deployment, Effect, Input, KeyDirectory, Machine, Observation};
use common::*;

/// A's companion, for the one test that needs a text from the receiving phone's own user.
const A1: DeviceId = DeviceId {
    user: UserId(0),
    index: 1,
};
const SEED_A: u64 = 100;
const SEED_B: u64 = 1;

fn conv() -> ConvId {
    ConvId::direct(A.user, B.user)
}

/// The two-user world with real keys (a phone only shows what it can open) and `bugs` on.
fn world(bugs: &[Bug]) -> Deployment {
    let keys = [A, A1, B]
        .into_iter()
        .map(|d| (d, device_keypair(0, d, None).public))
        .collect();
    Deployment {
        keys: KeyDirectory::new(keys),
        bugs: bugs.iter().copied().collect::<Bugs>(),
        ..topo()
    }
}

/// A text in the A–B chat from `from` to `to`, stored at `seq`.
fn text(from: DeviceId, to: DeviceId, seq: Seq) -> Message {
    let id = MsgId {
        device: from,
        n: seq as u32,
    };
    let copy = seal(
        &device_keypair(0, from, None),
        to,
        &device_keypair(0, to, None).public,
        id,
        format!("m{seq}").as_bytes(),
    );
    Message {
        conv: conv(),
        seq,
        id,
        body: Bundle {
            copies: vec![(to, copy)],
        }
        .encode(),
        sent_at: 0,
        event: None,
        keys: Vec::new(),
    }
}

/// A's text to B at `seq`.
fn from_a(seq: Seq) -> Message {
    text(A, B, seq)
}

/// One phone driven by hand, with its own clock.
struct Phone {
    d: Device,
    now: Millis,
}

impl Phone {
    /// Connected and welcomed; its first drain is still in progress.
    fn welcomed(id: DeviceId, seed: u64, topo: Deployment) -> (Phone, Vec<Effect>) {
        let mut p = Phone {
            d: Device::new(id, topo, seed, true),
            now: 0,
        };
        let mut out = p.at(0, Input::Timeout);
        out.extend(p.at(1, Input::Connected));
        out.extend(p.at(1, Input::Down(Down::Welcome { epoch: 1 })));
        (p, out)
    }

    /// Connected, welcomed, and its first drain answered: nothing parked.
    fn ready(id: DeviceId, seed: u64, topo: Deployment) -> Phone {
        let (mut p, _) = Phone::welcomed(id, seed, topo);
        p.at(1, drained());
        p
    }

    /// `input`, `ms` after the last one.
    fn at(&mut self, ms: Millis, input: Input) -> Vec<Effect> {
        self.now += ms;
        let mut out = Vec::new();
        self.d.handle(self.now, input, &mut out);
        out
    }

    fn deliver(&mut self, msg: Message) -> Vec<Effect> {
        let path = Path::Live;
        self.at(1, Input::Down(Down::Deliver { msg, path }))
    }

    fn act(&mut self, action: Action) -> Vec<Effect> {
        self.at(1, Input::Action(action))
    }

    /// Let `ms` pass a second at a time, the gateway answering each ping (so the heartbeat
    /// never gives up), firing whatever falls due.
    fn wait(&mut self, ms: Millis) -> Vec<Effect> {
        let mut out = Vec::new();
        let mut left = ms;
        while left > 0 {
            let step = left.min(1_000);
            left -= step;
            out.extend(self.at(step, Input::Down(Down::Pong)));
            out.extend(self.at(0, Input::Timeout));
        }
        out
    }
}

fn drained() -> Input {
    Input::Down(Down::DrainPage {
        next: None,
        more: false,
        receipts_more: false,
    })
}

/// Sent ✓ for our `id`, stored at `seq` in the A–B chat.
fn stored(id: MsgId, seq: Seq) -> Input {
    let conv = conv();
    Input::Down(Down::Sent { conv, id, seq })
}

fn acked(out: &[Effect]) -> Vec<(MsgId, Seq)> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Observe(Observation::Acked { id, seq, .. }) => Some((*id, *seq)),
            _ => None,
        })
        .collect()
}

fn shown(out: &[Effect]) -> Vec<Seq> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Observe(Observation::Displayed { seq, .. }) => Some(*seq),
            _ => None,
        })
        .collect()
}

fn dropped(out: &[Effect]) -> Vec<Seq> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Observe(Observation::DuplicateDropped { seq, .. }) => Some(*seq),
            _ => None,
        })
        .collect()
}

fn gaps(out: &[Effect]) -> Vec<(Seq, Seq)> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Observe(Observation::GapDetected { from, to, .. }) => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

fn fetches(out: &[Effect]) -> Vec<(Seq, Seq)> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Up(Up::Fetch { from, to, .. }) => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

fn receipts(out: &[Effect]) -> Vec<(ReceiptKind, Seq)> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Up(Up::Receipt { kind, upto, .. }) => Some((*kind, *upto)),
            _ => None,
        })
        .collect()
}

fn drains(out: &[Effect]) -> usize {
    out.iter()
        .filter(|e| matches!(e, Effect::Up(Up::Drain { .. })))
        .count()
}

fn sends(out: &[Effect]) -> Vec<MsgId> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Up(Up::Send { id, .. }) => Some(*id),
            _ => None,
        })
        .collect()
}

fn said_sent(out: &[Effect]) -> Vec<MsgId> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Observe(Observation::Sent { id, .. }) => Some(*id),
            _ => None,
        })
        .collect()
}

// early-queue-empty, connection.rs `on_welcome` (`now + INBOX_SYNC_MS` to `-`): a drain cut
// short counts as complete, so the next connection fetches no backlog and waits for the
// periodic sync, a full INBOX_SYNC_MS. That wait is the bug's liveness symptom: a deadline in
// the past would drain at once and hide it.
#[test]
fn early_queue_empty_skips_the_next_drain_until_the_periodic_sync() {
    let (mut b, out) = Phone::welcomed(B, SEED_B, world(&[Bug::EarlyQueueEmpty]));
    assert_eq!(drains(&out), 1, "the first connection drains");
    let out = b.at(1, Input::Disconnected);
    assert!(
        out.contains(&Effect::Observe(Observation::DrainComplete)),
        "the cut-short drain is taken as done: {out:?}"
    );
    // Back well after boot, so a deadline before `now` is a real time, not an underflow.
    let out = b.at(2 * INBOX_SYNC_MS, Input::Timeout);
    assert!(out.iter().any(|e| matches!(e, Effect::Connect { .. })));
    b.at(1, Input::Connected);
    let out = b.at(1, Input::Down(Down::Welcome { epoch: 2 }));
    assert_eq!(drains(&out), 0, "the welcome asks for no backlog");
    let out = b.wait(INBOX_SYNC_MS - 1);
    assert_eq!(drains(&out), 0, "nor anything before the periodic sync");
    let out = b.wait(1);
    assert_eq!(drains(&out), 1, "the periodic sync drains");
}

// no-client-dedup, conversation.rs `on_deliver` (`repeat || seq < next_seq`: `||` to `&&`,
// `<` to `==`): every copy is shown, even a repeat of a text still held behind a gap, but a
// first copy still goes through the view, so texts in order are shown once each and move the
// front (a branch that shows without moving it would see a gap after the first text).
#[test]
fn no_client_dedup_shows_every_copy_but_orders_first_copies() {
    let mut b = Phone::ready(B, SEED_B, world(&[Bug::NoClientDedup]));
    let mut out = b.deliver(from_a(1));
    out.extend(b.deliver(from_a(2)));
    assert_eq!(shown(&out), [1, 2]);
    assert!(gaps(&out).is_empty(), "{out:?}");
    let out = b.deliver(from_a(4));
    assert!(shown(&out).is_empty(), "a first copy after a gap waits");
    assert_eq!(gaps(&out), [(3, 3)]);
    let out = b.deliver(from_a(4));
    assert_eq!(shown(&out), [4], "its repeat is shown, gap or no gap");
    let out = b.deliver(from_a(1));
    assert_eq!(shown(&out), [1], "an old copy is shown again");
    assert!(dropped(&out).is_empty());
}

// order-by-timestamp, conversation.rs `on_deliver` (`next_seq.max(seq + 1)` to `seq - 1`):
// each text is shown on arrival, and the front still moves past it, so a text of our own
// stored next is in place, with no gap to fetch. Texts arriving out of order are shown out
// of order, which is what the bug shows `conversation_order`.
#[test]
fn order_by_timestamp_shows_on_arrival_and_moves_past_it() {
    let mut b = Phone::ready(B, SEED_B, world(&[Bug::OrderByTimestamp]));
    let mut out = b.deliver(from_a(1));
    assert_eq!(shown(&out), [1]);
    out.extend(b.act(Action::SendDirect {
        to: A.user,
        body: b"mine".to_vec(),
    }));
    let mine = MsgId { device: B, n: 0 };
    assert_eq!(sends(&out), [mine]);
    out.extend(b.at(1, stored(mine, 2)));
    assert_eq!(acked(&out), [(mine, 2)]);
    out.extend(b.deliver(from_a(4)));
    out.extend(b.deliver(from_a(3)));
    out.extend(b.wait(GAP_REPAIR_DELAY_MS + GAP_RETRY_MS));
    assert_eq!(shown(&out), [1, 4, 3], "shown as they came");
    assert!(gaps(&out).is_empty(), "never a gap: {:?}", gaps(&out));
    assert!(fetches(&out).is_empty());
}

// no-gap-repair, conversation.rs `on_deliver` (its condition `!repeat && seq >= next_seq &&
// !held`: each `!` deleted, each `&&` to `||`; and `next_seq = seq + 1` to `-` or `*`): a new
// text is shown at once and the front jumps past it, so the text that was missing, arriving
// late, is dropped as old (the message lost that `no_loss` sees), and a repeat of what was
// shown is still dropped, not shown twice. The front lands right after the text shown, so a
// text of our own stored next is in place: no gap. Nothing is ever fetched.
#[test]
fn no_gap_repair_shows_past_a_gap_and_drops_the_late_text() {
    let mut b = Phone::ready(B, SEED_B, world(&[Bug::NoGapRepair]));
    let mut out = b.deliver(from_a(1));
    out.extend(b.deliver(from_a(3)));
    assert_eq!(shown(&out), [1, 3], "3 is shown without waiting for 2");
    assert!(gaps(&out).is_empty());
    let out = b.deliver(from_a(2));
    assert!(shown(&out).is_empty(), "the late 2 is never shown");
    assert_eq!(dropped(&out), [2], "it is dropped as old");
    let mut out = b.deliver(from_a(3));
    out.extend(b.deliver(from_a(1)));
    assert!(shown(&out).is_empty(), "repeats are not shown again");
    assert_eq!(dropped(&out), [3, 1]);
    let mut out = b.act(Action::SendDirect {
        to: A.user,
        body: b"mine".to_vec(),
    });
    let mine = MsgId { device: B, n: 0 };
    out.extend(b.at(1, stored(mine, 4)));
    assert_eq!(acked(&out), [(mine, 4)]);
    out.extend(b.deliver(from_a(5)));
    out.extend(b.wait(GAP_REPAIR_DELAY_MS + GAP_RETRY_MS));
    assert_eq!(shown(&out), [5], "our 4 was in place right after 3");
    assert!(fetches(&out).is_empty() && gaps(&out).is_empty(), "{out:?}");
}

// read-before-delivered, conversation.rs `on_deliver` (`text`'s `!=` to `==`) and its open
// chat condition: in an open chat a text from the peer is called read on arrival, even one
// held behind a gap, so the sender sees "read" on a text the reader was never shown (what
// the `receipts` checker catches). The ✓✓ still covers only what was shown.
#[test]
fn read_before_delivered_reads_a_held_text_in_an_open_chat() {
    let mut b = Phone::ready(B, SEED_B, world(&[Bug::ReadBeforeDelivered]));
    b.act(Action::OpenChat { conv: conv() });
    let mut out = b.deliver(from_a(1));
    out.extend(b.deliver(from_a(3)));
    assert_eq!(shown(&out), [1], "3 waits for 2");
    let out = b.wait(RECEIPT_DELAY_MS);
    assert_eq!(
        receipts(&out),
        [(ReceiptKind::Delivered, 1), (ReceiptKind::Read, 3)]
    );
}

// read-before-delivered, conversation.rs `on_deliver` (the open-chat condition's `&&`s to
// `||`) and receipts.rs `read_open_chat` (`user != me` to `==`): with the chat closed nothing
// is read on arrival; opening it reads what is held behind the gap along with what was shown.
#[test]
fn read_before_delivered_reads_held_texts_when_the_chat_is_opened() {
    let mut b = Phone::ready(B, SEED_B, world(&[Bug::ReadBeforeDelivered]));
    let mut out = b.deliver(from_a(1));
    out.extend(b.deliver(from_a(3)));
    out.extend(b.wait(RECEIPT_DELAY_MS));
    assert_eq!(shown(&out), [1]);
    assert_eq!(
        receipts(&out),
        [(ReceiptKind::Delivered, 1)],
        "a closed chat reads nothing"
    );
    let (conv, kind) = (conv(), ReceiptKind::Delivered);
    b.at(
        1,
        Input::Down(Down::ReceiptAck {
            conv,
            kind,
            upto: 1,
        }),
    );
    b.act(Action::OpenChat { conv });
    let out = b.wait(RECEIPT_DELAY_MS);
    assert_eq!(
        receipts(&out),
        [(ReceiptKind::Read, 3)],
        "opening reads the held 3"
    );
}

// read-before-delivered, conversation.rs `on_deliver` (`text`'s `&&` to `||`) and receipts.rs
// `read_open_chat` (its `&&` to `||`): only someone else's text is read early, on arrival in
// an open chat or, held behind a gap, when the chat is opened. Our own text from a companion
// is owed no read receipt in any design (nobody waits for their own blue ticks); it only
// moves the delivered mark.
#[test]
fn read_before_delivered_does_not_read_our_own_companions_text() {
    let topo = Deployment {
        devices_per_user: 2,
        ..world(&[Bug::ReadBeforeDelivered])
    };
    let mut a = Phone::ready(A, SEED_A, topo);
    a.act(Action::OpenChat { conv: conv() });
    let ours = |seq| text(A1, A, seq);
    let mut out = a.deliver(ours(1));
    out.extend(a.deliver(ours(3)));
    out.extend(a.wait(RECEIPT_DELAY_MS));
    assert_eq!(shown(&out), [1], "3 waits for 2");
    assert_eq!(receipts(&out), [(ReceiptKind::Delivered, 1)]);
    let (conv, kind) = (conv(), ReceiptKind::Delivered);
    a.at(
        1,
        Input::Down(Down::ReceiptAck {
            conv,
            kind,
            upto: 1,
        }),
    );
    // Looking at the chat again reads what is held in it.
    a.act(Action::OpenChat { conv });
    let out = a.wait(RECEIPT_DELAY_MS);
    assert!(receipts(&out).is_empty(), "{:?}", receipts(&out));
}

// reader-skips-unfinished-seq, conversation.rs `on_gap_timer` (`end + 1` to `-` or `*`):
// after one fetch that did not fill the gap the reader moves past its end, showing what was
// held after it; the text only late, arriving then, is dropped (the loss `no_loss` sees).
#[test]
fn reader_skips_a_gap_one_fetch_did_not_fill() {
    let mut b = Phone::ready(B, SEED_B, world(&[Bug::ReaderSkipsUnfinishedSeq]));
    let mut out = b.deliver(from_a(1));
    out.extend(b.deliver(from_a(3)));
    assert_eq!(shown(&out), [1]);
    assert_eq!(gaps(&out), [(2, 2)]);
    let out = b.wait(GAP_REPAIR_DELAY_MS);
    assert_eq!(fetches(&out), [(2, 2)], "one fetch first");
    let out = b.wait(GAP_RETRY_MS);
    assert_eq!(shown(&out), [3], "then past the gap");
    assert!(fetches(&out).is_empty() && gaps(&out).is_empty(), "{out:?}");
    let out = b.deliver(from_a(2));
    assert!(shown(&out).is_empty());
    assert_eq!(dropped(&out), [2], "the late 2 is dropped");
}

// new-id-per-retry, outbox.rs `transmit` (`attempts > 0` to `<`, `>=` or `==`): the first
// transmission carries the id the text was composed with; each retry a fresh one, which the
// phone itself takes for a new message, so the server cannot spot the repeat (`exactly_once`).
#[test]
fn new_id_per_retry_gives_the_retry_a_fresh_id() {
    let mut a = Phone::ready(A, SEED_A, world(&[Bug::NewIdPerRetry]));
    let out = a.act(Action::SendDirect {
        to: B.user,
        body: b"hi".to_vec(),
    });
    let first = MsgId { device: A, n: 0 };
    assert_eq!(said_sent(&out), [first]);
    assert_eq!(sends(&out), [first], "the first try keeps its id");
    // The first retry comes within OUTBOX_RETRY_MS_MIN (jittered to half of it at least).
    let out = a.wait(OUTBOX_RETRY_MS_MIN);
    let second = MsgId { device: A, n: 1 };
    assert_eq!(sends(&out), [second], "the retry has a new id");
    assert_eq!(
        said_sent(&out),
        [second],
        "and is a new message to the phone"
    );
    assert_eq!(a.d.outbox_len(), 1, "the old id is gone from the outbox");
    let out = a.at(1, stored(second, 1));
    assert_eq!(acked(&out), [(second, 1)]);
    assert_eq!(a.d.outbox_len(), 0);
}

// receipt-upto-off-by-one, receipts.rs `owe` (`seq + 1` to `-` or `*`): both receipts cover
// exactly one number more than the phone has shown, the off-by-one the `receipts` checker
// is there to catch (a receipt short of what was shown, or none at all, is another bug).
#[test]
fn receipt_upto_off_by_one_covers_exactly_one_more() {
    let mut b = Phone::ready(B, SEED_B, world(&[Bug::ReceiptUptoOffByOne]));
    let mut out = b.deliver(from_a(1));
    out.extend(b.wait(RECEIPT_DELAY_MS));
    assert_eq!(shown(&out), [1]);
    assert_eq!(receipts(&out), [(ReceiptKind::Delivered, 2)]);
    let (conv, kind) = (conv(), ReceiptKind::Delivered);
    b.at(
        1,
        Input::Down(Down::ReceiptAck {
            conv,
            kind,
            upto: 2,
        }),
    );
    b.act(Action::OpenChat { conv });
    let out = b.wait(RECEIPT_DELAY_MS);
    assert_eq!(receipts(&out), [(ReceiptKind::Read, 2)]);
}

// delete-inbox-on-push (shard `delete_inbox` replaced by nothing, so the bug deleted
// nothing): the entry goes when the shard pushes, before any phone has it. Pushes are lost
// here, so the inbox is all the text has, and the bug must have emptied it.
#[test]
fn delete_inbox_on_push_deletes_the_entry_before_the_phone_has_it() {
    let run = |bugs: Bugs| {
        let topo = Deployment { bugs, ..topo() };
        let mut c = chatsim_system::testkit::Cluster::new(topo);
        c.run_for(1_000);
        let gateways = [0, 1].map(chatsim_system::proto::Host::Gateway);
        c.lossy.extend(gateways);
        send(&mut c, A, B, "pushed into the void");
        c.run_for(100);
        assert!(displayed(&c, B).is_empty(), "the push was lost");
        c.durable().inbox_entries()
    };
    assert_eq!(
        run(Bugs::none()),
        1,
        "the design keeps it until the phone acks"
    );
    let bugs: Bugs = [Bug::DeleteInboxOnPush].into_iter().collect();
    assert_eq!(run(bugs), 0, "the bug deletes it at the push");
}

// fire-and-forget-receipts (shard `push_receipt`'s "first attempt is the last", `-` to `/`,
// so the only attempt was already past the limit): the bug passes a receipt on once and keeps
// it nowhere. Once means once: in calm weather the sender still gets its ticks.
#[test]
fn fire_and_forget_receipts_passes_each_receipt_on_once() {
    let bugs: Bugs = [Bug::FireAndForgetReceipts].into_iter().collect();
    let topo = Deployment { bugs, ..topo() };
    let c = one_text(topo, "tick me", 2_000);
    let delivered = c
        .seen(A, |o| {
            matches!(o, Observation::Receipt { receipt } if receipt.kind == ReceiptKind::Delivered)
        })
        .count();
    assert_eq!(delivered, 1, "pushed once, straight to the sender");
    // Once and never again: with that push lost, the sender never gets its ticks (the design
    // retries, and gets them to it).
    let lost_push = |bugs: Bugs| {
        let world = Deployment {
            bugs,
            ..common::topo()
        };
        let mut c = chatsim_system::testkit::Cluster::new(world);
        c.run_for(1_000);
        send(&mut c, A, B, "tick me");
        c.run_for(15);
        assert_eq!(displayed(&c, B).len(), 1, "B has it");
        c.lossy
            .extend([0, 1].map(chatsim_system::proto::Host::Gateway));
        c.run_for(1_000);
        c.lossy.clear();
        c.run_for(20_000);
        c.seen(A, |o| {
            matches!(o, Observation::Receipt { receipt } if receipt.kind == ReceiptKind::Delivered)
        })
        .count()
    };
    assert_eq!(lost_push(Bugs::none()), 1, "the design retries the push");
    let bugs: Bugs = [Bug::FireAndForgetReceipts].into_iter().collect();
    assert_eq!(lost_push(bugs), 0, "the bug's one push was lost");
}

// ack-seq-off-by-one (shard `on_appended`'s `seq + 1`, turned to `seq - 1`): the bug's ✓
// carries the number after the one the text was stored under, exactly.
#[test]
fn ack_seq_off_by_one_acks_under_the_next_number() {
    let bugs: Bugs = [Bug::AckSeqOffByOne].into_iter().collect();
    let topo = Deployment { bugs, ..topo() };
    let c = one_text(topo, "first", 1_000);
    let acked: Vec<Seq> = c
        .seen(A, |o| matches!(o, Observation::Acked { .. }))
        .map(|o| match o {
            Observation::Acked { seq, .. } => *seq,
            _ => unreachable!("filtered to acks"),
        })
        .collect();
    assert_eq!(acked, vec![2], "stored under 1, acked as 2");
    assert_eq!(displayed(&c, B).first().map(|d| d.0), Some(1));
}

// dedup-by-user (storage `find_by_user` replaced by "nothing found", so the bug found no
// repeats): storage spots a retry by user and counter, so a companion's first text, whose
// counter matches its primary's first, is acked as a repeat and never shown.
#[test]
fn dedup_by_user_takes_a_companions_text_for_its_primarys() {
    let run = |bugs: Bugs| {
        let topo = Deployment {
            bugs,
            devices_per_user: 2,
            ..topo()
        };
        let mut c = chatsim_system::testkit::Cluster::new(topo);
        c.run_for(1_000);
        send(&mut c, A, B, "from the phone");
        c.run_for(1_000);
        send(&mut c, A1, B, "from the laptop");
        c.run_for(2_000);
        displayed(&c, B).len()
    };
    assert_eq!(run(Bugs::none()), 2);
    let bugs: Bugs = [Bug::DedupByUser].into_iter().collect();
    assert_eq!(run(bugs), 1, "the laptop's text was acked as the phone's");
}
