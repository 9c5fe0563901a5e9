//! The checks a gateway runs on every WebSocket message a phone sends (`serve::phone_frame`)
//! and the stream decoder behind every server link (`wire::decode`), fuzzed on stable Rust
//! with proptest: arbitrary bytes, and valid frames of every `Up` kind mutated (bytes flipped,
//! cut, inserted, deleted, a length prefix rewritten). Nothing may panic; what passes the
//! check must be a frame that encodes and decodes to itself; a stream decoder fed the same
//! bytes in any split must find the same frames.
//!
//! Inputs per run: [`CASES`], 110,000 over the three properties (more than the 10^5 CI asks
//! for), times `CHATSIM_FUZZ_SCALE` if it is set (`scripts/fuzz.sh` runs
//! more). A failing input is kept by proptest in `tests/fuzz.proptest-regressions` and tried
//! first on every later run; inputs that once broke something are also pinned below.

use bytes::BytesMut;
use chatsim_server::serve::{phone_frame, BadFrame};
use chatsim_system::proto::*;
use chatsim_world::wire::{decode, encode, Frame, Wire};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Inputs per run, before `CHATSIM_FUZZ_SCALE`: arbitrary bytes, mutated frames, split
/// streams (110,000 in all).
const CASES: [u32; 3] = [40_000, 50_000, 20_000];

fn cases(share: u32) -> u32 {
    let scale = std::env::var("CHATSIM_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1);
    share.saturating_mul(scale.max(1))
}

fn config(share: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(share),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/fuzz.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

fn me() -> DeviceId {
    DeviceId::primary(UserId(3))
}

fn up(u: Up) -> Vec<u8> {
    encode(&Frame {
        from: Host::Device(me()),
        sent_ms: 1_764_000_000_000,
        wire: Wire::Up(u),
    })
    .to_vec()
}

/// One valid frame of every `Up` kind, and two a phone may not send.
fn corpus() -> Vec<Vec<u8>> {
    let conv = ConvId::direct(UserId(3), UserId(4));
    let id = MsgId {
        device: me(),
        n: 77,
    };
    let mut frames = vec![
        up(Up::Hello {
            device: me(),
            token: u64::MAX - 5,
            epoch: 1_764_000_000_001,
        }),
        up(Up::Send {
            conv,
            id,
            body: vec![0xAB; 40],
            sent_at: 1_764_000_000_002,
            op: None,
            version: 0,
            keys: Vec::new(),
        }),
        up(Up::Send {
            conv: ConvId::group(2),
            id,
            body: Vec::new(),
            sent_at: 5,
            op: Some(GroupOp::Create {
                members: vec![UserId(3), UserId(4), UserId(5)],
            }),
            version: 3,
            keys: vec![(DeviceId::primary(UserId(4)), vec![1, 2, 3])],
        }),
        up(Up::Ack { conv, seq: 12 }),
        up(Up::Drain { after: None }),
        up(Up::Drain {
            after: Some(InboxCursor { conv, seq: 3 }),
        }),
        up(Up::Fetch {
            conv,
            from: 1,
            to: 64,
        }),
        up(Up::Pull {
            conv: ConvId::group(9),
        }),
        up(Up::Receipt {
            conv,
            kind: ReceiptKind::Delivered,
            upto: 7,
            notify: vec![DeviceId::primary(UserId(4))],
        }),
        up(Up::ReceiptSeen {
            conv,
            seen: vec![(DeviceId::primary(UserId(4)), ReceiptKind::Read, 9)],
        }),
        up(Up::Subscribe {
            user: Some(UserId(4)),
        }),
        up(Up::Ping),
        up(Up::Link),
    ];
    frames.push(
        encode(&Frame {
            from: Host::Gateway(0),
            sent_ms: 1,
            wire: Wire::Down(Down::Pong),
        })
        .to_vec(),
    );
    frames.push(
        encode(&Frame {
            from: Host::Shard(1),
            sent_ms: 1,
            wire: Wire::LinkAck(4),
        })
        .to_vec(),
    );
    frames
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Length(u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1..8usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        prop_oneof![Just(0u32), Just(u32::MAX), any::<u32>(), 0..64u32].prop_map(Mutation::Length),
    ]
}

fn mutate(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match m {
            Mutation::Flip(i, x) if !b.is_empty() => {
                let n = b.len();
                b[i % n] ^= x;
            }
            Mutation::Flip(..) => {}
            Mutation::Cut(i) => b.truncate(at(*i, b.len())),
            Mutation::Insert(i, more) => {
                let i = at(*i, b.len());
                b.splice(i..i, more.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let i = at(*i, b.len());
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Mutation::Length(len) if b.len() >= 4 => b[..4].copy_from_slice(&len.to_be_bytes()),
            Mutation::Length(_) => {}
        }
    }
    b
}

/// What must hold for any bytes a phone sends: no panic, and a frame that passes is one.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(frame) = phone_frame(bytes) {
        prop_assert!(matches!(frame.wire, Wire::Up(_)), "{frame:?}");
        let again = phone_frame(&encode(&frame));
        prop_assert_eq!(again.as_ref(), Ok(&frame));
    }
    // The stream decoder, as a server link reads: frames off the front until it needs more.
    let mut buf = BytesMut::from(bytes);
    let mut guard = 0;
    while let Ok(Some(_)) = decode(&mut buf) {
        guard += 1;
        prop_assert!(guard <= bytes.len(), "decode made frames out of nothing");
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(CASES[0]))]
    #[test]
    fn arbitrary_bytes_never_panic_the_frame_checks(
        bytes in prop::collection::vec(any::<u8>(), 0..96)
    ) {
        check(&bytes)?;
    }
}

proptest! {
    #![proptest_config(config(CASES[1]))]
    #[test]
    fn mutated_frames_of_every_kind_never_panic_the_frame_checks(
        which in 0..15usize,
        muts in prop::collection::vec(mutation(), 1..4),
    ) {
        let frames = corpus();
        let bytes = mutate(frames[which % frames.len()].clone(), &muts);
        check(&bytes)?;
    }
}

proptest! {
    #![proptest_config(config(CASES[2]))]
    #[test]
    fn a_stream_of_frames_decodes_the_same_whatever_its_splits(
        picks in prop::collection::vec(0..15usize, 1..6),
        splits in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let frames = corpus();
        let stream: Vec<u8> = picks.iter().flat_map(|i| frames[i % frames.len()].clone()).collect();
        let mut cuts: Vec<usize> = splits.iter().map(|s| s % (stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut buf = BytesMut::new();
        let (mut from, mut got) = (0, Vec::new());
        for cut in cuts {
            buf.extend_from_slice(&stream[from..cut]);
            from = cut;
            while let Some((f, raw)) = decode(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))? {
                got.push((f, raw));
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got.len(), picks.len());
        for ((_, raw), i) in got.iter().zip(&picks) {
            prop_assert_eq!(raw.as_ref(), frames[i % frames.len()].as_slice());
        }
    }
}

// Inputs that once mattered, kept whatever proptest draws.
#[test]
fn pinned_inputs_get_the_answers_they_always_got() {
    assert_eq!(phone_frame(b"garbage!").err(), Some(BadFrame::TooBig));
    assert_eq!(phone_frame(b"").err(), Some(BadFrame::Undecodable));
    assert_eq!(
        phone_frame(&[0, 0, 0, 0]).err(),
        Some(BadFrame::Undecodable)
    );
    // A Vec length of 2^63 inside a frame of nine bytes: refused, not allocated.
    let mut huge = vec![0, 0, 0, 12, 6, 3, 0, 0, 1, 1];
    huge.extend_from_slice(&[0xFF, 0xFF]);
    assert!(phone_frame(&huge).is_err());
    for f in corpus().iter().take(13) {
        assert!(phone_frame(f).is_ok(), "{f:?}");
    }
    for f in corpus().iter().skip(13) {
        assert_eq!(phone_frame(f).err(), Some(BadFrame::NotAPhoneFrame));
    }
}

// What a run tried, for the CI log (`.ci/run` runs this file with `--nocapture`).
#[test]
fn the_input_count_is_stated() {
    let total: u32 = CASES.iter().map(|c| cases(*c)).sum();
    assert!(
        total >= 100_000,
        "CI must try at least 10^5 inputs, not {total}"
    );
    eprintln!("frame checks fuzzed: {total} inputs this run (CHATSIM_FUZZ_SCALE multiplies)");
}
