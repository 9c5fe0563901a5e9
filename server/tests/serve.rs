//! The real server with real phones: `chatsim serve`'s hosts on loopback, and phones that are
//! the simulators' own `Device` machines over WebSocket. A text goes across with ✓, ✓✓ and
//! read; a peer that sends what no phone may is closed with a close code, and the server
//! serves the others on.

use chatsim_judge::{Event, Record};
use chatsim_server::phone::Phone;
use chatsim_server::serve::{bind, Served};
use chatsim_server::Config;
use chatsim_system::proto::{ConvId, DeviceId, ReceiptKind, UserId};
use chatsim_system::{Action, Observation};
use futures_util::{SinkExt, StreamExt};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::mpsc::unbounded_channel;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// A block of ports of this test process's own, under the ephemeral range (32768 up) that
/// outgoing connections draw from: a deployment needs its gateways' ports and, 100 up, one per
/// host, so blocks are 200 apart.
fn config(block: u16) -> Config {
    let base = 10_000 + (std::process::id() % 50) as u16 * 400 + block * 200;
    Config {
        addr: SocketAddr::from(([127, 0, 0, 1], base)),
        users: 3,
        gateways: 2,
        shards: 2,
        ..Config::default()
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("builds")
}

/// Serve `cfg` on a thread until the returned sender is dropped or sent to.
fn serve(
    cfg: &Config,
) -> (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<Served>,
) {
    serve_on(cfg, None)
}

/// Serve `cfg`, keeping its data in `data` (memory only when `None`).
fn serve_on(
    cfg: &Config,
    data: Option<&std::path::Path>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<Served>,
) {
    let bound = bind(cfg, &[], data, None).expect("the test's ports are free");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let t = std::thread::spawn(move || {
        let served = bound
            .run(
                async {
                    let _ = rx.await;
                },
                200,
            )
            .expect("the server stops cleanly");
        assert!(served.phone_connections > 0, "no phone ever connected");
        served
    });
    (tx, t)
}

fn has(records: &[Record], f: impl Fn(&Observation) -> bool) -> bool {
    records
        .iter()
        .any(|r| matches!(&r.event, Event::Device { obs, .. } if f(obs)))
}

#[test]
fn a_text_goes_across_with_sent_delivered_and_read() {
    let cfg = config(0);
    let (stop, server) = serve(&cfg);
    let (a, b) = (DeviceId::primary(UserId(0)), DeviceId::primary(UserId(1)));
    let conv = ConvId::direct(a.user, b.user);
    let seen_a: Rc<RefCell<Vec<Record>>> = Rc::default();
    let seen_b: Rc<RefCell<Vec<Record>>> = Rc::default();
    let local = tokio::task::LocalSet::new();
    local.block_on(&current_thread(), async {
        let (a_do, a_actions) = unbounded_channel();
        let (b_do, b_actions) = unbounded_channel();
        let (sa, sb) = (seen_a.clone(), seen_b.clone());
        let mut pa = Phone::new(&cfg, a);
        let mut pb = Phone::new(&cfg, b);
        tokio::task::spawn_local(async move {
            pa.run(a_actions, |r| sa.borrow_mut().push(r.clone())).await
        });
        tokio::task::spawn_local(async move {
            pb.run(b_actions, |r| sb.borrow_mut().push(r.clone())).await
        });
        // B has the chat open, so what it shows is read at once.
        b_do.send(Action::OpenChat { conv }).expect("running");
        a_do.send(Action::SendDirect {
            to: b.user,
            body: b"hello over a real socket".to_vec(),
        })
        .expect("running");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            let read = has(&seen_a.borrow(), |o| {
                matches!(
                    o,
                    Observation::Ticks {
                        tick: ReceiptKind::Read,
                        ..
                    }
                )
            });
            if read {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop((a_do, b_do));
    });
    let a_saw = seen_a.borrow();
    let b_saw = seen_b.borrow();
    assert!(
        has(&a_saw, |o| matches!(o, Observation::Acked { .. })),
        "no ✓: {a_saw:?}"
    );
    assert!(
        has(
            &b_saw,
            |o| matches!(o, Observation::Displayed { body, .. } if body == b"hello over a real socket")
        ),
        "B never showed it: {b_saw:?}"
    );
    for tick in [ReceiptKind::Delivered, ReceiptKind::Read] {
        assert!(
            has(
                &a_saw,
                |o| matches!(o, Observation::Ticks { tick: t, .. } if *t == tick)
            ),
            "no {tick:?} tick: {a_saw:?}"
        );
    }
    let _ = stop.send(());
    server.join().expect("the server thread ends");
}

#[test]
fn a_peer_that_sends_what_no_phone_may_is_closed_and_the_server_goes_on() {
    let cfg = config(1);
    let (stop, server) = serve(&cfg);
    let url = format!("ws://{}/", cfg.gateway_addr(0));
    current_thread().block_on(async {
        for (what, msg, code) in [
            (
                "garbage",
                Message::Binary(b"\x00\x00\x00\x05junk!".to_vec().into()),
                CloseCode::Invalid,
            ),
            (
                "text",
                Message::Text("hello".into()),
                CloseCode::Unsupported,
            ),
            // A ping is no frame: the peer stays silent, and is closed after the timeout.
            (
                "silence",
                Message::Ping(Vec::new().into()),
                CloseCode::Policy,
            ),
        ] {
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .expect("the gateway takes connections");
            ws.send(msg).await.expect("sends");
            let closed = close_code(&mut ws, Duration::from_secs(15)).await;
            assert_eq!(closed, Some(code), "{what}");
        }
    });
    // A socket that never even asks for the WebSocket upgrade is closed too.
    let mut raw = std::net::TcpStream::connect(cfg.gateway_addr(0)).expect("the gateway listens");
    raw.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("a timeout sets");
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut raw, &mut buf).expect("closed, not timed out");
    assert_eq!(
        n, 0,
        "the server wrote to a socket that never asked for anything"
    );
    // Still serving: a phone connects and gets its welcome.
    let local = tokio::task::LocalSet::new();
    let seen: Rc<RefCell<Vec<Record>>> = Rc::default();
    local.block_on(&current_thread(), async {
        let (todo, actions) = unbounded_channel();
        let mut p = Phone::new(&cfg, DeviceId::primary(UserId(2)));
        let s = seen.clone();
        tokio::task::spawn_local(async move {
            p.run(actions, |r| s.borrow_mut().push(r.clone())).await
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline
            && !has(&seen.borrow(), |o| {
                matches!(o, Observation::Connected { .. })
            })
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(todo);
    });
    assert!(
        has(&seen.borrow(), |o| matches!(
            o,
            Observation::Connected { .. }
        )),
        "{:?}",
        seen.borrow()
    );
    let _ = stop.send(());
    server.join().expect("the server thread ends");
}

/// A folder of this test's own, empty.
fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("chatsim-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Run phone `me` doing `actions` until `done` holds of what it observed, or 20 s pass.
fn phone_until(
    cfg: &Config,
    me: DeviceId,
    actions: Vec<Action>,
    done: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let seen: Rc<RefCell<Vec<Record>>> = Rc::default();
    let local = tokio::task::LocalSet::new();
    local.block_on(&current_thread(), async {
        let (todo, rx) = unbounded_channel();
        for a in actions {
            todo.send(a).expect("running");
        }
        let mut p = Phone::new(cfg, me);
        let s = seen.clone();
        let run =
            tokio::task::spawn_local(
                async move { p.run(rx, |r| s.borrow_mut().push(r.clone())).await },
            );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline && !done(&seen.borrow()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(todo);
        let _ = run.await;
    });
    seen.take()
}

// An acked text whose recipient was offline survives the server stopping and starting again
// on the same data folder: the recipient, connecting to the new server, drains it.
#[test]
fn an_acked_text_survives_a_restart_on_the_same_data_folder() {
    let cfg = config(2);
    let dir = scratch("restart");
    let (a, b) = (DeviceId::primary(UserId(0)), DeviceId::primary(UserId(1)));
    let (stop, server) = serve_on(&cfg, Some(&dir));
    let sent = phone_until(
        &cfg,
        a,
        vec![Action::SendDirect {
            to: b.user,
            body: b"kept on disk".to_vec(),
        }],
        |r| has(r, |o| matches!(o, Observation::Acked { .. })),
    );
    assert!(
        has(&sent, |o| matches!(o, Observation::Acked { .. })),
        "{sent:?}"
    );
    let _ = stop.send(());
    server.join().expect("the server thread ends");
    assert!(dir.join(chatsim_server::disk::FILE).exists());

    let (stop, server) = serve_on(&cfg, Some(&dir));
    let got = phone_until(&cfg, b, vec![], |r| {
        has(r, |o| matches!(o, Observation::Displayed { .. }))
    });
    assert!(
        has(
            &got,
            |o| matches!(o, Observation::Displayed { body, .. } if body == b"kept on disk")
        ),
        "lost across the restart: {got:?}"
    );
    let _ = stop.send(());
    server.join().expect("the server thread ends");

    // The folder belongs to that deployment: another one is refused, naming the file.
    let other = Config {
        users: 5,
        ..cfg.clone()
    };
    let e = bind(&other, &[], Some(&dir), None)
        .err()
        .expect("a mismatch is refused");
    assert!(
        e.to_string().contains("chatsim.redb") && e.to_string().contains("users=3"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// A client process that starts again while its last connection is still registered is not
// refused as stale: it numbers its connections from its clock, past any number an earlier
// process of the same device used (counting from 1 again, it lost to an entry at epoch 2).
#[test]
fn a_restarted_client_is_not_refused_as_an_older_connection() {
    let cfg = config(3);
    let (stop, server) = serve(&cfg);
    let me = DeviceId::primary(UserId(2));
    let first: Rc<RefCell<Vec<Record>>> = Rc::default();
    let second: Rc<RefCell<Vec<Record>>> = Rc::default();
    let connected = |r: &[Record]| {
        r.iter()
            .filter(|r| {
                matches!(
                    &r.event,
                    Event::Device {
                        obs: Observation::Connected { .. },
                        ..
                    }
                )
            })
            .count()
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&current_thread(), async {
        let (todo1, rx1) = unbounded_channel();
        let mut p1 = Phone::new(&cfg, me);
        let s1 = first.clone();
        tokio::task::spawn_local(
            async move { p1.run(rx1, |r| s1.borrow_mut().push(r.clone())).await },
        );
        // Reconnect once, so the session service holds a second connection's number.
        let wait = |seen: Rc<RefCell<Vec<Record>>>, n: usize| async move {
            let end = tokio::time::Instant::now() + Duration::from_secs(20);
            while tokio::time::Instant::now() < end && connected(&seen.borrow()) < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        wait(first.clone(), 1).await;
        todo1.send(Action::GoOffline).expect("running");
        todo1.send(Action::GoOnline).expect("running");
        wait(first.clone(), 2).await;
        let (todo2, rx2) = unbounded_channel();
        let mut p2 = Phone::new(&cfg, me);
        let s2 = second.clone();
        tokio::task::spawn_local(
            async move { p2.run(rx2, |r| s2.borrow_mut().push(r.clone())).await },
        );
        wait(second.clone(), 1).await;
        drop((todo1, todo2));
    });
    assert_eq!(connected(&first.borrow()), 2, "{:?}", first.borrow());
    assert!(
        connected(&second.borrow()) >= 1,
        "the restarted client never got in: {:?}",
        second.borrow()
    );
    let _ = stop.send(());
    server.join().expect("the server thread ends");
}

// A phone that stops reading while others keep sending to it would have the server queue its
// frames without bound (a busy group, live pushes retried). Once its queue passes a MiB behind
// the kernel's buffers it is dropped (counted as refused); nothing is lost, since whatever was
// queued live also waits in its inbox until acked. Before the bound, its connection task sat
// in a send the peer never read, and not even the gateway's idle close could end it.
#[test]
fn a_phone_that_stops_reading_is_dropped_and_the_server_goes_on() {
    use chatsim_system::proto::{Host, Up};
    use chatsim_system::routing::device_token;
    use chatsim_world::wire::{encode, Frame, Wire};
    let cfg = config(4);
    let (stop, server) = serve(&cfg);
    let (a, b) = (DeviceId::primary(UserId(0)), DeviceId::primary(UserId(1)));
    let rt = current_thread();
    // B says hello, then never reads again (the stream is kept, unpolled).
    let _deaf = rt.block_on(async {
        let url = format!("ws://{}/", cfg.gateway_addr(0));
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("the gateway takes connections");
        let hello = encode(&Frame {
            from: Host::Device(b),
            sent_ms: 0,
            wire: Wire::Up(Up::Hello {
                device: b,
                token: device_token(b),
                epoch: 1,
            }),
        });
        ws.send(Message::Binary(hello)).await.expect("sends");
        tokio::time::sleep(Duration::from_millis(300)).await;
        ws
    });
    // A sends B about 10 MB: more than the kernel's buffers and the queue hold.
    let texts = 200;
    let body = vec![b'x'; 48 * 1024];
    let sends = (0..texts)
        .map(|_| Action::SendDirect {
            to: b.user,
            body: body.clone(),
        })
        .collect();
    let seen = phone_until(&cfg, a, sends, |r| {
        r.iter()
            .filter(|r| {
                matches!(
                    &r.event,
                    Event::Device {
                        obs: Observation::Acked { .. },
                        ..
                    }
                )
            })
            .count()
            >= texts
    });
    let acked = seen
        .iter()
        .filter(|r| {
            matches!(
                &r.event,
                Event::Device {
                    obs: Observation::Acked { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(acked, texts, "the server stopped serving the sender");
    std::thread::sleep(Duration::from_millis(500));
    let _ = stop.send(());
    let served = server.join().expect("the server thread ends");
    assert!(
        served.refused >= 1,
        "the phone that stopped reading was never dropped: {served:?}"
    );
}

// A flood of connections costs a bounded amount: past its limit a gateway answers with close
// code 1013 (try again later) and drops the connection, and a place that frees up is taken.
#[test]
fn a_gateway_past_its_connection_limit_says_try_again_later() {
    let cfg = Config {
        phone_connections_max: 3,
        ..config(5)
    };
    let (stop, server) = serve(&cfg);
    let url = format!("ws://{}/", cfg.gateway_addr(0));
    let refused = current_thread().block_on(async {
        let mut held = Vec::new();
        for _ in 0..3 {
            let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .expect("under the limit");
            held.push(ws);
        }
        // The fourth is told to come back later.
        let (mut extra, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("the handshake completes");
        let closed = tokio::time::timeout(Duration::from_secs(3), async {
            while let Some(m) = extra.next().await {
                if let Ok(Message::Close(frame)) = m {
                    return frame.map(|f| f.code);
                }
            }
            None
        })
        .await
        .expect("closed at once");
        // One leaves; the next one is held, not refused.
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (mut again, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("a place is free");
        let early = tokio::time::timeout(Duration::from_millis(500), again.next()).await;
        assert!(early.is_err(), "the freed place was refused: {early:?}");
        closed
    });
    assert_eq!(refused, Some(CloseCode::Again));
    let _ = stop.send(());
    let served = server.join().expect("the server thread ends");
    assert_eq!(served.refused, 1, "{served:?}");
}

/// The close code the gateway ends `ws` with, waiting at most `within` (panics past it).
async fn close_code<S>(ws: &mut S, within: Duration) -> Option<CloseCode>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(within, async {
        while let Some(m) = ws.next().await {
            if let Ok(Message::Close(frame)) = m {
                return frame.map(|f| f.code);
            }
        }
        None
    })
    .await
    .expect("closed in time")
}

/// One frame a phone would send, as bytes on the wire.
fn up_frame(from: DeviceId, up: chatsim_system::proto::Up) -> Vec<u8> {
    chatsim_world::wire::encode(&chatsim_world::wire::Frame {
        from: chatsim_system::proto::Host::Device(from),
        sent_ms: 0,
        wire: chatsim_world::wire::Wire::Up(up),
    })
    .to_vec()
}

/// The next frame the gateway sends down `ws`, if one comes within `within`, and whether the
/// connection then ended (closed or cut).
async fn next_down<S>(ws: &mut S, within: Duration) -> Option<chatsim_system::proto::Down>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(within, async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(b) = m {
                let mut buf = bytes::BytesMut::from(&b[..]);
                if let Ok(Some((f, _))) = chatsim_world::wire::decode(&mut buf) {
                    if let chatsim_world::wire::Wire::Down(d) = f.wire {
                        return Some(d);
                    }
                }
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

// A hostile network at the gateway, each case answered as docs/protocol.md states, while a
// good phone on the same gateway keeps getting its answers quickly: a truncated frame (1007),
// a frame over the limit (1009), a frame before the Hello (refused, NotAuthenticated), a
// Hello for another device with the wrong token (refused, BadToken, dropped), and a slowloris
// that dribbles its handshake (dropped at the first-frame timeout).
#[test]
fn a_hostile_network_is_refused_case_by_case_and_others_are_served_on() {
    use chatsim_system::proto::{Down, Refusal, Up};
    use std::io::Write as _;
    let cfg = config(6);
    let (stop, server) = serve(&cfg);
    let url = format!("ws://{}/", cfg.gateway_addr(0));
    let good = DeviceId::primary(UserId(0));
    let before = rss_kib();
    let worst_rtt = current_thread().block_on(async {
        // The good phone: bound, then pinging throughout.
        let (mut phone, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("the gateway takes connections");
        phone
            .send(Message::Binary(
                up_frame(
                    good,
                    Up::Hello {
                        device: good,
                        token: chatsim_system::routing::device_token(good),
                        epoch: 1,
                    },
                )
                .into(),
            ))
            .await
            .expect("sends");
        assert!(
            matches!(
                next_down(&mut phone, Duration::from_secs(5)).await,
                Some(Down::Welcome { .. })
            ),
            "the good phone is welcomed"
        );
        let mut worst = Duration::ZERO;
        let mut rtt = async |phone: &mut tokio_tungstenite::WebSocketStream<_>| {
            let t = std::time::Instant::now();
            phone
                .send(Message::Binary(up_frame(good, Up::Ping).into()))
                .await
                .expect("sends");
            let pong = next_down(phone, Duration::from_secs(5)).await;
            assert!(matches!(pong, Some(Down::Pong)), "{pong:?}");
            worst = worst.max(t.elapsed());
        };

        // The slowloris starts first and dribbles a byte a second through the rest.
        let slow = std::thread::spawn({
            let at = cfg.gateway_addr(0);
            move || {
                let mut s = std::net::TcpStream::connect(at).expect("the gateway listens");
                let started = std::time::Instant::now();
                for b in b"GET / HTTP/1.1\r\nHost: x\r\n".iter() {
                    if s.write_all(&[*b]).is_err() {
                        return started.elapsed();
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                started.elapsed()
            }
        });

        for (what, bytes, code) in [
            (
                "truncated",
                {
                    let mut f = up_frame(good, Up::Ping);
                    f.truncate(f.len() - 1);
                    f
                },
                CloseCode::Invalid,
            ),
            (
                "oversize",
                vec![
                    0u8;
                    chatsim_server::serve::ws_config()
                        .max_message_size
                        .unwrap_or(0)
                        + 1
                ],
                CloseCode::Size,
            ),
        ] {
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .expect("the gateway takes connections");
            let _ = ws.send(Message::Binary(bytes.into())).await;
            let closed = close_code(&mut ws, Duration::from_secs(10)).await;
            assert_eq!(closed, Some(code), "{what}");
            rtt(&mut phone).await;
        }

        // Before the Hello, nothing but a ping is answered.
        let (mut early, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("the gateway takes connections");
        // A drain of someone's inbox, asked before saying who is asking.
        let send = Up::Drain { after: None };
        early
            .send(Message::Binary(up_frame(good, send).into()))
            .await
            .expect("sends");
        let answer = next_down(&mut early, Duration::from_secs(5)).await;
        assert!(
            matches!(
                answer,
                Some(Down::Refused {
                    reason: Refusal::NotAuthenticated,
                    ..
                })
            ),
            "{answer:?}"
        );
        rtt(&mut phone).await;

        // Claiming another device without its token.
        let (mut liar, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("the gateway takes connections");
        let victim = DeviceId::primary(UserId(1));
        liar.send(Message::Binary(
            up_frame(
                victim,
                Up::Hello {
                    device: victim,
                    token: chatsim_system::routing::device_token(good),
                    epoch: 1,
                },
            )
            .into(),
        ))
        .await
        .expect("sends");
        let answer = next_down(&mut liar, Duration::from_secs(5)).await;
        assert!(
            matches!(
                answer,
                Some(Down::Refused {
                    reason: Refusal::BadToken,
                    ..
                })
            ),
            "{answer:?}"
        );
        assert_eq!(
            next_down(&mut liar, Duration::from_secs(5)).await,
            None,
            "and dropped"
        );
        rtt(&mut phone).await;

        let dribbled = tokio::task::spawn_blocking(move || slow.join().expect("joins"))
            .await
            .expect("joins");
        assert!(
            dribbled < chatsim_server::serve::FIRST_FRAME_TIMEOUT + Duration::from_secs(2),
            "the slowloris was held {dribbled:?}"
        );
        rtt(&mut phone).await;
        worst
    });
    // The bound other users are held to during the attacks: a ping answered well within a
    // heartbeat (measured here; loopback answers in about a millisecond). And the attacks cost
    // the server no lasting memory (the oversize one is refused before it is buffered whole).
    let grew = before
        .zip(rss_kib())
        .map_or(0, |(a, b)| b.saturating_sub(a));
    eprintln!("hostile: a good phone's worst pong {worst_rtt:?}, server RSS grew {grew} KiB");
    assert!(
        worst_rtt < Duration::from_millis(250),
        "a good phone waited {worst_rtt:?} for its pong during the attacks"
    );
    assert!(
        grew < 64 * 1024,
        "the server grew {grew} KiB during the attacks"
    );
    let _ = stop.send(());
    server.join().expect("the server thread ends");
}

/// This process's resident memory, KiB (Linux).
fn rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

// A device that sends texts as fast as its socket takes them is held to its rate (after its
// burst, about PHONE_SENDS_PER_S acked a second), closed with 1008 once it has been held back
// for PHONE_THROTTLED_MAX, and meanwhile a good phone's pings are answered quickly and the
// server's memory stays put.
#[test]
fn a_phone_sending_faster_than_allowed_is_slowed_then_closed() {
    use chatsim_server::serve::{PHONE_SENDS_BURST, PHONE_SENDS_PER_S, PHONE_THROTTLED_MAX};
    use chatsim_system::proto::{Down, MsgId, Up};
    let cfg = config(7);
    let (stop, server) = serve(&cfg);
    let url = format!("ws://{}/", cfg.gateway_addr(0));
    let hello = |d: DeviceId| {
        Message::Binary(
            up_frame(
                d,
                Up::Hello {
                    device: d,
                    token: chatsim_system::routing::device_token(d),
                    epoch: 1,
                },
            )
            .into(),
        )
    };
    let before = rss_kib();
    let (acked_early, code, took, worst_rtt, grew) = current_thread().block_on(async {
        let good = DeviceId::primary(UserId(0));
        let (mut phone, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("the gateway takes connections");
        phone.send(hello(good)).await.expect("sends");
        assert!(matches!(
            next_down(&mut phone, Duration::from_secs(5)).await,
            Some(Down::Welcome { .. })
        ));

        let flooder = DeviceId::primary(UserId(2));
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("the gateway takes connections");
        let (mut sink, mut source) = ws.split();
        sink.send(hello(flooder)).await.expect("sends");
        let started = std::time::Instant::now();
        let flood = tokio::spawn(async move {
            for n in 0..100_000u32 {
                let send = Up::Send {
                    conv: ConvId::direct(UserId(2), UserId(1)),
                    id: MsgId { device: flooder, n },
                    body: vec![b'x'; 32],
                    sent_at: 0,
                    op: None,
                    version: 0,
                    keys: Vec::new(),
                };
                if sink
                    .send(Message::Binary(up_frame(flooder, send).into()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        // Count the flooder's ✓s as they come, until it is closed.
        let watch = tokio::spawn(async move {
            let mut early = 0u32;
            loop {
                match tokio::time::timeout(Duration::from_secs(30), source.next()).await {
                    Ok(Some(Ok(Message::Binary(b)))) => {
                        let mut buf = bytes::BytesMut::from(&b[..]);
                        if let Ok(Some((f, _))) = chatsim_world::wire::decode(&mut buf) {
                            if matches!(f.wire, chatsim_world::wire::Wire::Down(Down::Sent { .. }))
                                && started.elapsed() < Duration::from_secs(3)
                            {
                                early += 1;
                            }
                        }
                    }
                    Ok(Some(Ok(Message::Close(frame)))) => {
                        return (early, frame.map(|f| f.code), started.elapsed());
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => return (early, None, started.elapsed()),
                }
            }
        });
        let mut worst = Duration::ZERO;
        let mut grew = 0u64;
        while !watch.is_finished() {
            let t = std::time::Instant::now();
            phone
                .send(Message::Binary(up_frame(good, Up::Ping).into()))
                .await
                .expect("sends");
            let pong = next_down(&mut phone, Duration::from_secs(5)).await;
            assert!(matches!(pong, Some(Down::Pong)), "{pong:?}");
            worst = worst.max(t.elapsed());
            if let (Some(a), Some(b)) = (before, rss_kib()) {
                grew = grew.max(b.saturating_sub(a));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (early, code, took) = watch.await.expect("joins");
        flood.abort();
        (early, code, took, worst, grew)
    });
    eprintln!(
        "flood: {acked_early} texts acked in its first 3 s, closed after {took:?}, a good \
         phone's worst pong {worst_rtt:?}, server RSS grew {grew} KiB"
    );
    // Within its first 3 s: the burst and 3 s of its rate, give or take a few in flight.
    let allowed = PHONE_SENDS_BURST + 3.0 * PHONE_SENDS_PER_S + 20.0;
    assert!(
        f64::from(acked_early) <= allowed,
        "{acked_early} texts acked in 3 s (limit {allowed})"
    );
    assert!(
        acked_early >= 100,
        "the flooder's first texts go through: {acked_early}"
    );
    assert_eq!(code, Some(CloseCode::Policy), "closed as TooFast");
    assert!(
        took >= PHONE_THROTTLED_MAX && took < PHONE_THROTTLED_MAX + Duration::from_secs(10),
        "closed after {took:?}"
    );
    assert!(
        worst_rtt < Duration::from_millis(250),
        "a good phone waited {worst_rtt:?} for its pong during the flood"
    );
    assert!(
        grew < 64 * 1024,
        "the server grew {grew} KiB during the flood"
    );
    let _ = stop.send(());
    server.join().expect("the server thread ends");
}
