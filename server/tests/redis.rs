//! The session table on Redis (`chatsim serve --sessions redis://…`): the epoch fence holds in
//! Redis itself (an older registration and a late disconnect of an older connection change
//! nothing), what Redis holds comes back on a restart, and a served phone's connection shows up
//! there and goes when it disconnects. Each test starts its own `redis-server` on a loopback
//! port (CI installs Debian's); without one on PATH the test says so and passes, except in CI.

use chatsim_judge::{Event, Record};
use chatsim_server::phone::Phone;
use chatsim_server::serve::bind;
use chatsim_server::sessions::RedisSessions;
use chatsim_server::Config;
use chatsim_system::durable::Write;
use chatsim_system::proto::{DeviceId, UserId};
use chatsim_system::session::SessionChange;
use chatsim_system::Observation;
use redis::Commands;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::unbounded_channel;

fn base() -> u16 {
    10_000 + (std::process::id() % 50) as u16 * 400
}

/// A redis-server of this test's own, killed when dropped.
struct Redis(Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_server(port: u16) -> Option<Redis> {
    let spawned = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn();
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have redis-server (.ci/run installs it): {e}"
            );
            eprintln!("redis-server not found ({e}): the Redis tests did not run");
            return None;
        }
    };
    let r = Redis(child, port);
    let up = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < up, "redis-server never listened on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(r)
}

#[test]
fn the_epoch_fence_holds_in_redis_and_its_table_comes_back() {
    let Some(redis) = redis_server(base() + 390) else {
        return;
    };
    let url = format!("redis://127.0.0.1:{}/", redis.1);
    let d = DeviceId::primary(UserId(1));
    let entry = |g, e, at| SessionChange::Entry {
        device: d,
        entry: Some((g, e, at)),
    };
    let mut s = RedisSessions::open(&url, "fence", |_| {}).expect("Redis is up");
    assert_eq!(s.apply(&entry(0, 5, 100)).ok(), Some(true));
    assert_eq!(
        s.apply(&entry(1, 3, 200)).ok(),
        Some(false),
        "an older registration replaced a newer one"
    );
    assert_eq!(
        s.clear_if(d, 3).ok(),
        Some(false),
        "a late disconnect of an older connection erased the newer one"
    );
    let seen = SessionChange::LastSeen {
        user: UserId(2),
        at: 50,
    };
    assert_eq!(s.apply(&seen).ok(), Some(true));
    let earlier = SessionChange::LastSeen {
        user: UserId(2),
        at: 40,
    };
    assert_eq!(s.apply(&earlier).ok(), Some(false), "a last seen went back");
    let mut back = Vec::new();
    RedisSessions::open(&url, "fence", |w| back.push(w)).expect("Redis is up");
    assert_eq!(
        back,
        vec![Write::Session(entry(0, 5, 100)), Write::Session(seen)],
        "what came back"
    );
    // Another deployment's table is its own.
    let mut other = Vec::new();
    RedisSessions::open(&url, "another", |w| other.push(w)).expect("Redis is up");
    assert!(other.is_empty());
    assert_eq!(
        s.apply(&SessionChange::Entry {
            device: d,
            entry: None
        })
        .ok(),
        Some(true),
        "the entry's own clear"
    );
}

#[test]
fn a_served_phones_connection_is_registered_in_redis_and_cleared_when_it_goes() {
    let Some(redis) = redis_server(base() + 391) else {
        return;
    };
    let url = format!("redis://127.0.0.1:{}/", redis.1);
    let cfg = Config {
        addr: SocketAddr::from(([127, 0, 0, 1], base() + 200 + 60)),
        users: 3,
        ..Config::default()
    };
    let bound = bind(&cfg, &[], None, Some(&url)).expect("ports free, Redis up");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        bound
            .run(
                async {
                    let _ = stopped.await;
                },
                200,
            )
            .expect("stops cleanly")
    });
    let key = format!("chatsim:{{{}}}:sessions", cfg.name());
    let mut conn = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .expect("Redis is up");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("builds");
    let local = tokio::task::LocalSet::new();
    let mut while_connected = None;
    local.block_on(&rt, async {
        let (todo, actions) = unbounded_channel();
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::<Record>::new()));
        let mut p = Phone::new(&cfg, DeviceId::primary(UserId(0)));
        let s = seen.clone();
        let run = tokio::task::spawn_local(async move {
            p.run(actions, |r| s.borrow_mut().push(r.clone())).await
        });
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < end
            && !seen.borrow().iter().any(|r| {
                matches!(
                    &r.event,
                    Event::Device {
                        obs: Observation::Connected { .. },
                        ..
                    }
                )
            })
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while_connected = conn
            .hget::<_, _, Option<String>>(&key, "u0.d0")
            .ok()
            .flatten();
        drop(todo);
        let _ = run.await;
    });
    let entry = while_connected.expect("the connected phone is in Redis");
    assert!(
        entry.split(':').count() == 3,
        "gateway:epoch:at, not {entry}"
    );
    let end = Instant::now() + Duration::from_secs(10);
    let mut left: Option<String> = Some(entry);
    while left.is_some() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
        left = conn.hget(&key, "u0.d0").expect("Redis is up");
    }
    assert_eq!(left, None, "the phone went but its entry stayed");
    let _ = stop.send(());
    let served = server.join().expect("the server thread ends");
    assert_eq!(served.phone_connections, 1);
}
