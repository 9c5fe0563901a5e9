//! A phone on real sockets: the same `Device` machine behind the same `PhoneHost` the
//! simulators drive, connected to its gateway over WebSocket. `chatsim client` and the tests
//! drive it; what it observes (texts shown, ticks, receipts, presence) is recorded as a
//! history, the same records a simulated run judges.

use crate::serve::{ws_config, RealNet};
use crate::site::{Endpoint, Net};
use crate::{now, Config};
use bytes::{Bytes, BytesMut};
use chatsim_judge::Record;
use chatsim_system::device::Device;
use chatsim_system::proto::{DeviceId, Host, Millis};
use chatsim_system::{Action, Deployment};
use chatsim_world::host::{PhoneEvent, PhoneHost, PhoneLinks};
use chatsim_world::plan::Plan;
use chatsim_world::record::{Keep, Recorder};
use chatsim_world::wire::{decode, Wire};
use futures_util::{SinkExt, StreamExt};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio_tungstenite::tungstenite::Message;

/// How long a connection attempt may take before the phone counts it failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Message ids reserved at a time: one durable write covers this many sends.
pub const ID_BLOCK: u32 = 1_000;

/// Where a phone keeps the highest message id it may have handed out, so that a restarted
/// phone starts past it: a reused id is a lost message (the shard answers a new text with an
/// old one's ✓ as a retry, and receivers drop it as a duplicate) and a reused nonce. Ids are
/// reserved a block at a time, each reservation synced before any id of it is used, so a
/// crash costs at most a gap in the numbers.
#[derive(Debug)]
pub struct IdStore {
    path: PathBuf,
    /// Ids below this may have been handed out.
    reserved: u32,
    /// The first id this process may use.
    start: u32,
    /// Held for the process's life (see [`IdStore::open`]).
    _lock: std::fs::File,
}

impl IdStore {
    /// The store at `path` (a small text file, created with its folder if missing), with a
    /// first block reserved.
    pub fn open(path: &Path) -> io::Result<IdStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        // Two processes handing out ids from one counter would hand out the same ones: the
        // second is refused for as long as the first runs.
        let lock = std::fs::File::create(path.with_extension("lock"))?;
        if let Err(e) = lock.try_lock() {
            return Err(match e {
                std::fs::TryLockError::WouldBlock => io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{}: another client is running this device from this state folder",
                        path.display()
                    ),
                ),
                std::fs::TryLockError::Error(e) => e,
            });
        }
        let start = match std::fs::read_to_string(path) {
            Ok(text) => text.trim().parse::<u32>().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not a message id counter: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let mut store = IdStore {
            path: path.to_path_buf(),
            reserved: start,
            start,
            _lock: lock,
        };
        store.reserve(start)?;
        Ok(store)
    }

    /// The first id this process may hand out.
    pub fn start(&self) -> u32 {
        self.start
    }

    /// Make sure id `n` is reserved, reserving a new block (synced) if it is not.
    pub fn cover(&mut self, n: u32) -> io::Result<()> {
        if n < self.reserved {
            return Ok(());
        }
        self.reserve(n)
    }

    fn reserve(&mut self, from: u32) -> io::Result<()> {
        let upto = from.checked_add(ID_BLOCK).ok_or_else(|| {
            io::Error::other(format!(
                "{}: this device has used up its message ids",
                self.path.display()
            ))
        })?;
        // Written aside and renamed over, so a crash leaves the old reservation or the new.
        let aside = self.path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&aside)?;
            writeln!(f, "{upto}")?;
            f.sync_all()?;
        }
        std::fs::rename(&aside, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        self.reserved = upto;
        Ok(())
    }
}

/// A phone: its host, its recorder, and the channel its connection tasks report on.
pub struct Phone {
    id: DeviceId,
    host: PhoneHost<UnboundedSender<Bytes>>,
    rec: Recorder,
    links: WsLinks,
    events: UnboundedReceiver<PhoneEvent>,
    shown: usize,
    ids: Option<IdStore>,
}

impl Phone {
    /// Device `id` of the deployment `cfg` describes, online from the start.
    pub fn new(cfg: &Config, id: DeviceId) -> Phone {
        Phone::of(cfg, &cfg.deployment(), id)
    }

    /// As [`Phone::new`], with the deployment already built: a load generator running
    /// thousands of phones builds its key directory once, not once a phone.
    pub fn of(cfg: &Config, topo: &Deployment, id: DeviceId) -> Phone {
        let topo = topo.clone();
        let mut machine = Device::new(id, topo.clone(), cfg.device_seed(id), true);
        machine.resume_epochs_after(now());
        let (tx, events) = unbounded_channel();
        Phone {
            id,
            host: PhoneHost::new(id, machine, Vec::new()),
            rec: Recorder::new(&topo, &Plan::default(), Keep::VERDICT),
            links: WsLinks {
                net: RealNet::new(cfg),
                me: id,
                events: tx,
            },
            events,
            shown: 0,
            ids: None,
        }
    }

    /// As [`Phone::new`], handing out message ids past those in `ids`, which a phone that runs
    /// in more than one process needs (see [`IdStore`]).
    pub fn keeping_ids(cfg: &Config, id: DeviceId, ids: IdStore) -> Phone {
        let mut phone = Phone::new(cfg, id);
        phone.host.machine_mut().resume_ids_at(ids.start());
        phone.ids = Some(ids);
        phone
    }

    /// Which device this is.
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// Everything this phone observed so far, in order, stamped with [`now`]'s clock.
    pub fn records(&self) -> Vec<Record> {
        self.rec.records_from(0)
    }

    /// Run until `actions` closes (the user quit), doing each action as it comes and handing
    /// each new record of what the phone observed to `on_record`. Call it inside a
    /// `LocalSet`: connection tasks are spawned locally. Fails only if the phone cannot keep
    /// its message ids, before the action that would have used one it could not keep.
    pub async fn run(
        &mut self,
        mut actions: UnboundedReceiver<Action>,
        mut on_record: impl FnMut(&Record),
    ) -> io::Result<()> {
        loop {
            let wait = self
                .host
                .deadline()
                .map(|d: Millis| Duration::from_millis(d.saturating_sub(now())));
            tokio::select! {
                biased;
                ev = self.events.recv() => {
                    let ev = ev.expect("the phone holds a sender");
                    self.host.on_event(now(), ev, &self.rec, &mut self.links);
                }
                a = actions.recv() => match a {
                    Some(a) => {
                        // An action takes at most one new id: reserve it before it goes out.
                        if let Some(ids) = self.ids.as_mut() {
                            ids.cover(self.host.machine().next_message_n())?;
                        }
                        self.host.act(now(), a, &self.rec, &mut self.links);
                    }
                    None => return Ok(()),
                },
                _ = sleep_opt(wait), if wait.is_some() => {
                    self.host.on_deadline(now(), &self.rec, &mut self.links);
                }
            }
            for r in self.rec.records_from(self.shown) {
                self.shown += 1;
                on_record(&r);
            }
        }
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// How a phone's bytes leave it: a WebSocket per connection attempt.
struct WsLinks {
    net: RealNet,
    me: DeviceId,
    events: UnboundedSender<PhoneEvent>,
}

impl PhoneLinks<UnboundedSender<Bytes>> for WsLinks {
    fn connect(&mut self, gateway: u16, gen: u64) -> UnboundedSender<Bytes> {
        let (tx, rx) = unbounded_channel();
        tokio::task::spawn_local(connection(
            self.net.clone(),
            self.me,
            gateway,
            gen,
            rx,
            self.events.clone(),
        ));
        tx
    }

    fn send(&mut self, conn: &UnboundedSender<Bytes>, frame: Bytes) {
        let _ = conn.send(frame);
    }
}

/// One connection attempt of phone `me` to `gateway` and, if it connects, its life: frames
/// from `outgoing` go out one per binary message; each message in is one frame, told to
/// `events` as connection `gen`'s. Ends when either side closes or the phone drops `outgoing`
/// (it moved on to another connection). A simulated world runs this same function over its
/// own sockets.
pub async fn connection<N: Net>(
    net: N,
    me: DeviceId,
    gateway: u16,
    gen: u64,
    mut outgoing: UnboundedReceiver<Bytes>,
    events: UnboundedSender<PhoneEvent>,
) {
    let attempt = async {
        let stream = net.connect(Endpoint::Phones(gateway)).await.ok()?;
        tokio_tungstenite::client_async_with_config(net.url(gateway), stream, Some(ws_config()))
            .await
            .ok()
    };
    let Ok(Some((ws, _))) = tokio::time::timeout(CONNECT_TIMEOUT, attempt).await else {
        let _ = events.send(PhoneEvent::ConnectFailed(gen));
        return;
    };
    let _ = events.send(PhoneEvent::Connected(gen));
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            biased;
            out = outgoing.recv() => match out {
                Some(frame) => {
                    if sink.send(Message::Binary(frame)).await.is_err() {
                        break;
                    }
                }
                None => {
                    let _ = sink.close().await;
                    return;
                }
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    let mut buf = BytesMut::from(&data[..]);
                    match decode(&mut buf) {
                        Ok(Some((f, raw))) if matches!(f.wire, Wire::Down(_)) => {
                            net.heard(net.now(), Host::Device(me), &raw, &f);
                            let _ = events.send(PhoneEvent::Frame(gen, Box::new(f.wire)));
                        }
                        // A gateway that sends what no gateway sends is not one to trust.
                        _ => break,
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_) | Message::Close(_)) | Err(_)) | None => break,
            }
        }
    }
    let _ = events.send(PhoneEvent::Closed(gen));
}

#[cfg(test)]
mod tests {
    use super::*;

    // A second process on the same counter would hand out the first one's ids; a restart
    // starts past everything the first one could have used.
    #[test]
    fn ids_survive_a_restart_and_one_counter_has_one_process() {
        let dir = std::env::temp_dir().join(format!("chatsim-ids-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("u0.d0.next-id");
        let mut first = IdStore::open(&path).expect("opens");
        assert_eq!(first.start(), 0);
        let e = IdStore::open(&path).expect_err("the counter is in use");
        assert!(e.to_string().contains("another client"), "{e}");
        first.cover(ID_BLOCK + 5).expect("reserves");
        drop(first);
        let again = IdStore::open(&path).expect("free again");
        assert!(again.start() > ID_BLOCK + 5, "{}", again.start());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
