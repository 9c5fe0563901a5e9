//! `chatsim load`: thousands of real phones over real WebSockets against a running `chatsim
//! serve` (or against the bare relay it is measured against, `--floor`), on a fixed schedule.
//!
//! What it owns:
//! - the **schedule** ([`Schedule`]): every send's intended time, sender and addressee, the
//!   groups and the devices that go away for a while, drawn from a seed, the same for the chat
//!   server and the floor;
//! - the **open-model driver**: each send is handed to its phone at its intended time, and
//!   every latency is measured from that time, not from when the phone got round to it, so a
//!   stalled server (or a stalled generator) cannot hide its stall (coordinated omission);
//! - the **figures**: HDR histograms (send to ✓, send to display by path, connect), msgs/s,
//!   connections held, server memory per idle connection and CPU per message read from
//!   `/proc`;
//! - the **verdict**: what every phone observed, merged into one history and judged by the
//!   same checkers as a simulated run. A load run that loses a message fails.
//!
//! The phones are the real client (`chatsim_server::phone::Phone`: the `Device` machine
//! behind the host layer), all on one thread, so the generator costs one core at most.

use crate::report::charts::line_chart;
use crate::report::{chart_block, draw_charts, esc, page, timeline};
use chatsim_judge::checkers::{check_all, Bounds, Verdict};
use chatsim_judge::{Event, Fault, History, Record};
use chatsim_server::phone::Phone;
use chatsim_server::relay;
use chatsim_server::Config;
use chatsim_system::knobs::Knobs;
use chatsim_system::proto::{DeviceId, Millis, MsgId, Path as DeliveryPath, UserId};
use chatsim_system::{Action, Observation};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use real_tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use real_tokio::task::JoinHandle;
use serde::Serialize;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// What load to offer.
#[derive(Clone, Debug, Serialize)]
pub struct LoadSpec {
    /// Phones (one user each).
    pub devices: u32,
    /// Messages offered per second, spread evenly (an open model: the schedule does not wait
    /// for answers).
    pub rate: f64,
    /// How long messages are offered (s).
    pub duration_s: f64,
    /// Groups created before the load.
    pub groups: u32,
    /// Members per group, the creator included.
    pub group_size: u32,
    /// Percent of messages sent to a group the sender is in (the rest are direct).
    pub group_share: u8,
    /// Percent of devices that go offline once during the load and come back.
    pub away_share: u8,
    /// How long each of them stays away (s).
    pub away_s: f64,
    /// How long after the load every sent message may take to be acked and shown (s): the
    /// liveness bound the verdict holds the run to, and how long the run waits for it.
    pub settle_s: f64,
    /// Phones that connect at once; the next batch starts when these are connected.
    pub connect_batch: u32,
    /// Bytes of each text.
    pub body_bytes: usize,
    /// Draws the schedule.
    pub seed: u64,
    /// Times the server is killed with SIGKILL during the load and started again on the same
    /// data folder (only a server the run started itself can be).
    pub kills: u32,
}

/// Where a send goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum To {
    /// A user's phone.
    User(u32),
    /// A group, by number (index into [`Schedule::groups`] plus one).
    Group(u32),
}

/// One send of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    /// When, in µs from the load's start.
    pub at_us: u64,
    /// The sending user.
    pub from: u32,
    /// Where to.
    pub to: To,
}

/// Everything the load does, drawn from the spec's seed before it starts.
#[derive(Clone, Debug, Default)]
pub struct Schedule {
    /// Each group's members, creator first; group `n` is at index `n - 1`.
    pub groups: Vec<Vec<u32>>,
    /// The sends, in time order.
    pub sends: Vec<Planned>,
    /// (user, gone from µs, back at µs): each such user is offline in between and sends
    /// nothing from shortly before until it is back.
    pub away: Vec<(u32, u64, u64)>,
    /// When the server is killed (µs from the load's start) and which moment was aimed at.
    pub kills: Vec<(u64, KillPoint)>,
}

/// Which moment a SIGKILL aims at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum KillPoint {
    /// Any time during the load.
    Anywhere,
    /// A few ms after a group text was handed over: mid fan-out.
    MidFanout,
    /// Shortly after an away phone came back: mid drain.
    MidDrain,
}

impl Schedule {
    /// The schedule `spec` describes.
    pub fn new(spec: &LoadSpec) -> Schedule {
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        let users: Vec<u32> = (0..spec.devices).collect();
        let size = spec.group_size.clamp(2, spec.devices) as usize;
        let groups: Vec<Vec<u32>> = (0..spec.groups)
            .map(|_| users.choose_multiple(&mut rng, size).copied().collect())
            .collect();
        let mut member_of: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (i, g) in groups.iter().enumerate() {
            for u in g {
                member_of.entry(*u).or_default().push(i as u32 + 1);
            }
        }
        let total_us = (spec.duration_s * 1e6) as u64;
        let away_us = ((spec.away_s * 1e6) as u64).min(total_us / 2);
        let away_n = (u64::from(spec.devices) * u64::from(spec.away_share) / 100) as usize;
        let away: Vec<(u32, u64, u64)> = users
            .choose_multiple(&mut rng, away_n)
            .map(|u| {
                let from = rng.gen_range(0..=total_us.saturating_sub(away_us).max(1) / 2);
                (*u, from, from + away_us)
            })
            .collect();
        let gone: BTreeMap<u32, (u64, u64)> = away.iter().map(|(u, a, b)| (*u, (*a, *b))).collect();
        // A sender that goes away soon after sending would carry its text off in its outbox;
        // the schedule keeps senders to phones that stay for the next second.
        let margin = 1_000_000;
        let present = |u: u32, t: u64| gone.get(&u).is_none_or(|(a, b)| t + margin < *a || t >= *b);
        let count = (spec.rate * spec.duration_s).round() as u64;
        let mut sends = Vec::with_capacity(count as usize);
        for i in 0..count {
            let at_us = (i as f64 * 1e6 / spec.rate) as u64;
            let mut from = rng.gen_range(0..spec.devices);
            for _ in 0..64 {
                if present(from, at_us) {
                    break;
                }
                from = rng.gen_range(0..spec.devices);
            }
            if !present(from, at_us) {
                continue;
            }
            let mine = member_of.get(&from);
            let to = match mine {
                Some(gs) if rng.gen_range(0..100u8) < spec.group_share => {
                    To::Group(*gs.choose(&mut rng).expect("a member is in a group"))
                }
                _ => {
                    let mut to = rng.gen_range(0..spec.devices - 1);
                    if to >= from {
                        to += 1;
                    }
                    To::User(to)
                }
            };
            sends.push(Planned { at_us, from, to });
        }
        let group_sends: Vec<u64> = sends
            .iter()
            .filter(|p| matches!(p.to, To::Group(_)))
            .map(|p| p.at_us)
            .collect();
        let mut kills: Vec<(u64, KillPoint)> = (0..spec.kills)
            .map(|k| {
                let aim = [
                    KillPoint::MidFanout,
                    KillPoint::MidDrain,
                    KillPoint::Anywhere,
                ][k as usize % 3];
                let at = match aim {
                    KillPoint::MidFanout => group_sends.choose(&mut rng).map(|t| t + 3_000),
                    KillPoint::MidDrain => away.choose(&mut rng).map(|(_, _, back)| back + 40_000),
                    KillPoint::Anywhere => None,
                };
                match at {
                    Some(t) => (t, aim),
                    None => (
                        rng.gen_range(total_us / 10..=total_us * 8 / 10),
                        KillPoint::Anywhere,
                    ),
                }
            })
            .collect();
        kills.sort_by_key(|k| k.0);
        Schedule {
            groups,
            sends,
            away,
            kills,
        }
    }

    /// How many phones must show send `p`.
    pub fn addressees(&self, p: &Planned) -> usize {
        match p.to {
            To::User(_) => 1,
            To::Group(g) => self.groups[g as usize - 1].len() - 1,
        }
    }
}

/// The text of send `i`: its index first, so every observation of it says which send it was.
fn body(i: usize, bytes: usize) -> Vec<u8> {
    let mut b = format!("load {i} ").into_bytes();
    b.resize(bytes.max(b.len()), b'.');
    b
}

fn index_of(body: &[u8]) -> Option<usize> {
    std::str::from_utf8(body)
        .ok()?
        .strip_prefix("load ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// Latencies in µs, up to an hour, three significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("fixed, valid bounds")
}

/// A histogram's quantiles, in ms.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Quantiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// The largest.
    pub max_ms: f64,
}

impl Quantiles {
    fn of(h: &Histogram<u64>) -> Quantiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Quantiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }

    fn line(&self) -> String {
        if self.count == 0 {
            return "none".into();
        }
        format!(
            "p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.1} ms  ({})",
            self.p50_ms, self.p99_ms, self.p999_ms, self.max_ms, self.count
        )
    }
}

/// What a process used, read from `/proc` (Linux); `None` elsewhere or for a process that is
/// gone.
pub mod proc_stats {
    /// Resident memory, KiB.
    pub fn rss_kib(pid: u32) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// CPU time used so far by every thread, user and system, in seconds.
    pub fn cpu_s(pid: u32) -> Option<f64> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may hold spaces; the fields after its ')' do not.
        let rest = &s[s.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime, fields 14 and 15 of the line, 12 and 13 after the name and state.
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        // In USER_HZ, which Linux fixes at 100 for what it shows user space.
        Some(ticks as f64 / 100.0)
    }
}

/// What the run did and measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadReport {
    /// "chatsim" or "floor" (the bare relay).
    pub target: String,
    /// The spec it ran.
    pub spec: Option<LoadSpec>,
    /// Phones that connected at least once.
    pub connected: u32,
    /// Phones connected when the load ended.
    pub held_at_end: u32,
    /// Connections lost during the load that the schedule did not ask for.
    pub unplanned_drops: u64,
    /// From a phone's start to its first connection (handshake and registration done).
    pub connect: Quantiles,
    /// Seconds from the first phone's start to the last one's connection.
    pub connect_all_s: f64,
    /// Sends in the schedule, and how many the phones made.
    pub sends: u64,
    /// Sends acknowledged (✓).
    pub acked: u64,
    /// Displays owed (each send, once per addressee phone).
    pub owed: u64,
    /// Displays seen (first per phone and message).
    pub displayed: u64,
    /// Sends handed to phones per second over the load.
    pub sent_per_s: f64,
    /// Displays per second, from the load's start to the last display.
    pub delivered_per_s: f64,
    /// Intended send time to ✓.
    pub ack: Quantiles,
    /// Intended send time to display, every path.
    pub display: Quantiles,
    /// The same, by path (live push, inbox drain, gap fetch).
    pub display_by_path: BTreeMap<String, Quantiles>,
    /// How late the generator handed sends to phones (its own stall; included above).
    pub generator_lag: Quantiles,
    /// How late a 1 ms tick on the phones' shared thread ran, over the load and settle: the
    /// longest is the window reconnect bursts are judged over (timers due inside a stall
    /// fire together after it, a clump no phone drew).
    pub generator_stall: Quantiles,
    /// Server RSS before any phone connected (KiB).
    pub server_rss_base_kib: Option<u64>,
    /// Server RSS with every phone connected and idle (KiB).
    pub server_rss_idle_kib: Option<u64>,
    /// Server RSS at the end (KiB).
    pub server_rss_end_kib: Option<u64>,
    /// (idle - base) / connected phones.
    pub kib_per_idle_connection: Option<f64>,
    /// Server CPU seconds over the load and settle.
    pub server_cpu_s: Option<f64>,
    /// Server CPU ms per thousand displays.
    pub server_cpu_ms_per_1k: Option<f64>,
    /// This generator's CPU seconds over the load and settle.
    pub generator_cpu_s: Option<f64>,
    /// SIGKILLs during the load, each with the moment it aimed at and how long the server
    /// took to listen again (ms).
    pub kills: Vec<(KillPoint, f64)>,
    /// Each checker's verdict on the merged history (empty for the floor: it has no chat
    /// semantics to judge, only its delivery count).
    pub verdict: Vec<Verdict>,
    /// Whether every checker holds and every owed display arrived.
    pub passed: bool,
    /// The same schedule through the bare relay, right after, when asked (`--beside-floor`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beside_floor: Option<Beside>,
    /// Events in the judged history.
    pub history_events: usize,
}

/// A chat run set beside the floor's run of the same schedule: each figure as chat / floor.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Beside {
    /// The floor's displays per second.
    pub floor_delivered_per_s: f64,
    /// Chat displays/s over the floor's (1.0 while both keep up with the offered rate; below
    /// it, chat fell behind).
    pub delivered_ratio: f64,
    /// The floor's p99 send to display (ms).
    pub floor_display_p99_ms: f64,
    /// Chat p99 over the floor's, live pushes only (the floor has no phones away, whose
    /// backlog waits for them).
    pub display_p99_ratio: f64,
    /// The floor's server CPU per 1000 displays (ms).
    pub floor_cpu_ms_per_1k: Option<f64>,
    /// Chat server CPU per display over the floor's.
    pub cpu_ratio: Option<f64>,
}

impl LoadReport {
    /// p99 send to display of live pushes (every path, if none was recorded by path).
    pub fn live_p99_ms(&self) -> f64 {
        self.display_by_path
            .get("live")
            .map_or(self.display.p99_ms, |q| q.p99_ms)
    }
}

impl Beside {
    /// `chat` set beside `floor`.
    pub fn of(chat: &LoadReport, floor: &LoadReport) -> Beside {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        Beside {
            floor_delivered_per_s: floor.delivered_per_s,
            delivered_ratio: ratio(chat.delivered_per_s, floor.delivered_per_s),
            floor_display_p99_ms: floor.display.p99_ms,
            display_p99_ratio: ratio(chat.live_p99_ms(), floor.display.p99_ms),
            floor_cpu_ms_per_1k: floor.server_cpu_ms_per_1k,
            cpu_ratio: chat
                .server_cpu_ms_per_1k
                .zip(floor.server_cpu_ms_per_1k)
                .map(|(a, b)| ratio(a, b)),
        }
    }
}

/// What went wrong before a run could be judged.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A spec value that cannot run.
    #[error("{0}")]
    Spec(String),
    /// The target is not there or failed.
    #[error("{0}")]
    Target(String),
    /// Local I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl LoadSpec {
    /// Refuse what cannot run, naming the flag.
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |flag: &str, why: &str| Err(LoadError::Spec(format!("--{flag}: {why}")));
        if self.devices < 2 {
            return bad("devices", "at least 2 (someone to talk to)");
        }
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 1e6) {
            return bad("rate", "messages per second, above 0 and at most 1000000");
        }
        if !(self.duration_s.is_finite() && self.duration_s > 0.0 && self.duration_s <= 3600.0) {
            return bad("duration", "seconds, above 0 and at most 3600");
        }
        if !(self.settle_s.is_finite() && self.settle_s > 0.0 && self.settle_s <= 600.0) {
            return bad("settle", "seconds, above 0 and at most 600");
        }
        if !(self.away_s.is_finite() && self.away_s >= 0.0) {
            return bad("away-secs", "seconds, 0 or more");
        }
        if self.group_share > 100 || self.away_share > 100 {
            return bad("group-share/away-share", "a percentage, 0 to 100");
        }
        if self.groups > 0 && self.group_size < 2 {
            return bad("group-size", "at least 2 members");
        }
        if self.connect_batch == 0 {
            return bad("connect-batch", "at least 1");
        }
        if !(16..=60_000).contains(&self.body_bytes) {
            return bad("body-bytes", "16 to 60000");
        }
        Ok(())
    }
}

/// What one phone's observations add up to, shared by every phone on the generator's thread.
struct Tally {
    started: Vec<Option<Instant>>,
    connected: Vec<bool>,
    ever: Vec<bool>,
    ever_n: u32,
    connected_n: u32,
    last_connect: Option<Instant>,
    connect: Histogram<u64>,
    /// Each handed-over send's intended time, by send index.
    intended: Vec<Instant>,
    /// Lookups only: which send an id is.
    send_of: HashMap<MsgId, usize>,
    acked: HashSet<MsgId>,
    shown: HashSet<(DeviceId, MsgId)>,
    ack: Histogram<u64>,
    display: Histogram<u64>,
    by_path: BTreeMap<DeliveryPath, Histogram<u64>>,
    last_display: Option<Instant>,
    away: Vec<bool>,
    measuring: bool,
    unplanned_drops: u64,
}

impl Tally {
    fn new(n: u32) -> Tally {
        let n = n as usize;
        Tally {
            started: vec![None; n],
            connected: vec![false; n],
            ever: vec![false; n],
            ever_n: 0,
            connected_n: 0,
            last_connect: None,
            connect: histogram(),
            intended: Vec::new(),
            send_of: HashMap::new(),
            acked: HashSet::new(),
            shown: HashSet::new(),
            ack: histogram(),
            display: histogram(),
            by_path: BTreeMap::new(),
            last_display: None,
            away: vec![false; n],
            measuring: false,
            unplanned_drops: 0,
        }
    }

    fn since(t: Instant) -> u64 {
        t.elapsed().as_micros().max(1) as u64
    }

    fn connected(&mut self, u: usize) {
        if !self.connected[u] {
            self.connected[u] = true;
            self.connected_n += 1;
        }
        if !self.ever[u] {
            self.ever[u] = true;
            self.ever_n += 1;
            self.last_connect = Some(Instant::now());
            if let Some(t) = self.started[u] {
                self.connect.saturating_record(Tally::since(t));
            }
        }
    }

    fn disconnected(&mut self, u: usize) {
        if self.connected[u] {
            self.connected[u] = false;
            self.connected_n -= 1;
            if self.measuring && !self.away[u] {
                self.unplanned_drops += 1;
            }
        }
    }

    fn shown(&mut self, device: DeviceId, id: MsgId, i: Option<usize>, path: Option<DeliveryPath>) {
        // Only the schedule's texts count (a group's creation is shown too).
        let Some(at) = i.and_then(|i| self.intended.get(i)).copied() else {
            return;
        };
        if !self.shown.insert((device, id)) {
            return;
        }
        let us = Tally::since(at);
        self.display.saturating_record(us);
        if let Some(path) = path {
            self.by_path
                .entry(path)
                .or_insert_with(histogram)
                .saturating_record(us);
        }
        self.last_display = Some(Instant::now());
    }

    fn on_record(&mut self, device: DeviceId, r: &Record) {
        let u = device.user.0 as usize;
        let Event::Device { obs, .. } = &r.event else {
            return;
        };
        match obs {
            Observation::Connected { .. } => self.connected(u),
            Observation::Disconnected { .. } => self.disconnected(u),
            Observation::Sent { id, body, .. } => {
                if let Some(i) = index_of(body) {
                    self.send_of.insert(*id, i);
                }
            }
            Observation::Acked { id, .. } => {
                let at = self.send_of.get(id).and_then(|i| self.intended.get(*i));
                if let Some(at) = at.copied() {
                    if self.acked.insert(*id) {
                        self.ack.saturating_record(Tally::since(at));
                    }
                }
            }
            Observation::Displayed { id, path, body, .. } => {
                self.shown(device, *id, index_of(body), Some(*path));
            }
            _ => {}
        }
    }
}

/// Wait until `done` holds or `limit` passes; true if it held.
async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while !done() {
        if Instant::now() >= end {
            return false;
        }
        real_tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// A server the run started itself, which it can kill and start again. Nothing here waits:
/// the phones share the generator's thread, and a thread blocked through a restart would
/// hold every phone's timers until it woke, then fire them in one millisecond (a lockstep
/// reconnect the design does not make).
pub trait Restart {
    /// Send the server SIGKILL.
    fn kill(&mut self) -> Result<(), String>;
    /// Whether the killed process is gone (and reaped).
    fn gone(&mut self) -> bool;
    /// Start it again on the same data; its process id.
    fn start(&mut self) -> Result<u32, String>;
    /// Why the started server stopped, if it has.
    fn stopped(&mut self) -> Option<String>;
}

/// Kill `server`, start it again and wait until gateway 1 at `addr` takes connections,
/// without blocking the thread; its new process id.
async fn restart(server: &mut dyn Restart, addr: SocketAddr) -> Result<u32, String> {
    server.kill()?;
    while !server.gone() {
        real_tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let pid = server.start()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Ok(_)) = real_tokio::time::timeout(
            Duration::from_millis(200),
            real_tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            return Ok(pid);
        }
        if let Some(why) = server.stopped() {
            return Err(why);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the restarted server did not listen at {addr} within 30 s"
            ));
        }
        real_tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The server process being measured, if known.
#[derive(Clone, Copy, Debug)]
pub struct Watch {
    /// Its pid, for `/proc`.
    pub pid: Option<u32>,
}

impl Watch {
    fn rss(&self) -> Option<u64> {
        self.pid.and_then(proc_stats::rss_kib)
    }
    fn cpu(&self) -> Option<f64> {
        self.pid.and_then(proc_stats::cpu_s)
    }
}

/// How long idle phones sit before the server's memory is read.
const IDLE: Duration = Duration::from_secs(2);

/// Run the schedule against the chat server `cfg` describes and judge what the phones saw.
/// `progress` hears each phase as it starts.
pub fn run_chat(
    cfg: &Config,
    spec: &LoadSpec,
    watch: Watch,
    server: Option<&mut dyn Restart>,
    progress: &mut dyn FnMut(&str),
) -> Result<(LoadReport, History), LoadError> {
    spec.validate()?;
    if spec.kills > 0 && server.is_none() {
        return Err(LoadError::Spec(
            "--kills: only a server this run starts itself can be killed (drop --target)".into(),
        ));
    }
    let sched = Schedule::new(spec);
    let rt = real_tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = real_tokio::task::LocalSet::new();
    local.block_on(&rt, drive_chat(cfg, spec, &sched, watch, server, progress))
}

/// Start `n` clients (`start(u)` spawns client `u`) in batches of `batch`, each batch
/// waited for until all of it has connected (30 s at most; `missing` says what to check
/// then), and read the connection figures and the server's idle memory into `report`.
async fn connect_all(
    n: u32,
    batch: u32,
    tally: &Rc<RefCell<Tally>>,
    watch: Watch,
    report: &mut LoadReport,
    mut start: impl FnMut(u32),
    missing: impl Fn(u32, u32) -> String,
) -> Result<(), LoadError> {
    let started = Instant::now();
    for u in 0..n {
        tally.borrow_mut().started[u as usize] = Some(Instant::now());
        start(u);
        if (u + 1) % batch == 0 || u + 1 == n {
            let want = u + 1;
            if !until(Duration::from_secs(30), || tally.borrow().ever_n >= want).await {
                return Err(LoadError::Target(missing(tally.borrow().ever_n, want)));
            }
        }
    }
    {
        let t = tally.borrow();
        report.connected = t.ever_n;
        report.connect = Quantiles::of(&t.connect);
        report.connect_all_s = t.last_connect.map_or(0.0, |l| (l - started).as_secs_f64());
    }
    real_tokio::time::sleep(IDLE).await;
    report.server_rss_idle_kib = watch.rss();
    if let (Some(base), Some(idle)) = (report.server_rss_base_kib, report.server_rss_idle_kib) {
        report.kib_per_idle_connection =
            Some(idle.saturating_sub(base) as f64 / f64::from(report.connected.max(1)));
    }
    Ok(())
}

/// What the tally counted over a load that ran from `start` to `load_end`, into `report`.
fn read_tally(
    report: &mut LoadReport,
    t: &Tally,
    (start, load_end): (Instant, Instant),
    (sends, owed): (u64, u64),
    lag: &Histogram<u64>,
) {
    report.sends = sends;
    report.acked = t.acked.len() as u64;
    report.owed = owed;
    report.displayed = t.shown.len() as u64;
    report.unplanned_drops = t.unplanned_drops;
    report.sent_per_s = sends as f64 / (load_end - start).as_secs_f64().max(1e-3);
    report.delivered_per_s = t.last_display.map_or(0.0, |l| {
        report.displayed as f64 / l.saturating_duration_since(start).as_secs_f64().max(1e-3)
    });
    report.ack = Quantiles::of(&t.ack);
    report.display = Quantiles::of(&t.display);
    report.display_by_path = t
        .by_path
        .iter()
        .map(|(p, h)| (p.to_string(), Quantiles::of(h)))
        .collect();
    report.generator_lag = Quantiles::of(lag);
}

async fn drive_chat(
    cfg: &Config,
    spec: &LoadSpec,
    sched: &Schedule,
    mut watch: Watch,
    mut server: Option<&mut dyn Restart>,
    progress: &mut dyn FnMut(&str),
) -> Result<(LoadReport, History), LoadError> {
    let n = spec.devices;
    let topo = cfg.deployment();
    let tally = Rc::new(RefCell::new(Tally::new(n)));
    let t0_ms = chatsim_server::now();
    let mut report = LoadReport {
        target: "chatsim".into(),
        spec: Some(spec.clone()),
        server_rss_base_kib: watch.rss(),
        ..LoadReport::default()
    };

    progress(&format!(
        "connecting {n} phones, {} at a time",
        spec.connect_batch
    ));
    let mut phones: Vec<UnboundedSender<Action>> = Vec::with_capacity(n as usize);
    let mut tasks: Vec<JoinHandle<(DeviceId, Vec<Record>)>> = Vec::with_capacity(n as usize);
    let start_phone = |u: u32| {
        let d = DeviceId {
            user: UserId(u),
            index: 0,
        };
        let (tx, rx) = unbounded_channel();
        let mut phone = Phone::of(cfg, &topo, d);
        let t = tally.clone();
        tasks.push(real_tokio::task::spawn_local(async move {
            let _ = phone.run(rx, |r| t.borrow_mut().on_record(d, r)).await;
            (d, phone.records())
        }));
        phones.push(tx);
    };
    let missing = |got: u32, want: u32| {
        format!(
            "only {got} of {want} phones connected within 30 s of their batch's start: is \
             chatsim serve running at {} with --users {n} (or more) and the same --seed, \
             --gateways and --shards?",
            cfg.addr
        )
    };
    connect_all(
        n,
        spec.connect_batch,
        &tally,
        watch,
        &mut report,
        start_phone,
        missing,
    )
    .await?;
    progress(&format!(
        "{} phones connected in {:.1} s; server memory read after {} s idle",
        report.connected,
        report.connect_all_s,
        IDLE.as_secs()
    ));

    let mut history_extra: Vec<(Millis, Event)> = Vec::new();
    for (i, members) in sched.groups.iter().enumerate() {
        let _ = phones[members[0] as usize].send(Action::CreateGroup {
            group: i as u32 + 1,
            members: members[1..].iter().map(|u| UserId(*u)).collect(),
        });
    }
    if !sched.groups.is_empty() {
        // Membership is sequenced in each group's own log before its first text; the pause
        // only keeps group creation out of the measured window.
        real_tokio::time::sleep(Duration::from_secs(1)).await;
    }

    progress(&format!(
        "offering {} messages at {}/s for {} s ({} groups of {}, {}% of texts to groups, {} phones away for {} s)",
        sched.sends.len(),
        spec.rate,
        spec.duration_s,
        sched.groups.len(),
        spec.group_size,
        spec.group_share,
        sched.away.len(),
        spec.away_s
    ));
    let cpu0 = (watch.cpu(), proc_stats::cpu_s(std::process::id()));
    let mut toggles: Vec<(u64, u32, bool)> = sched
        .away
        .iter()
        .flat_map(|(u, a, b)| [(*a, *u, false), (*b, *u, true)])
        .collect();
    toggles.sort_unstable();
    let mut toggles = toggles.into_iter().peekable();
    let start = Instant::now() + Duration::from_millis(20);
    tally.borrow_mut().measuring = true;
    let stall = Rc::new(RefCell::new(histogram()));
    let ticker = {
        let stall = stall.clone();
        real_tokio::task::spawn_local(async move {
            let mut due = Instant::now();
            loop {
                due += Duration::from_millis(1);
                real_tokio::time::sleep_until(due.into()).await;
                stall.borrow_mut().saturating_record(
                    Instant::now()
                        .saturating_duration_since(due)
                        .as_micros()
                        .max(1) as u64,
                );
                due = due.max(Instant::now());
            }
        })
    };
    let mut lag = histogram();
    let mut owed = 0u64;
    let toggle = |(_, u, online): (u64, u32, bool), extra: &mut Vec<(Millis, Event)>| {
        let d = DeviceId {
            user: UserId(u),
            index: 0,
        };
        tally.borrow_mut().away[u as usize] = !online;
        let (action, fault) = if online {
            (Action::GoOnline, Fault::DeviceOnline(d))
        } else {
            (Action::GoOffline, Fault::DeviceOffline(d))
        };
        extra.push((chatsim_server::now(), Event::Fault(fault)));
        let _ = phones[u as usize].send(action);
    };
    let mut kills = sched.kills.iter().peekable();
    let mut cpu_before_kills = 0.0;
    for (i, p) in sched.sends.iter().enumerate() {
        let at = start + Duration::from_micros(p.at_us);
        while let Some(t) = toggles.next_if(|(t, _, _)| *t <= p.at_us) {
            toggle(t, &mut history_extra);
        }
        while let Some((kill_at, aim)) = kills.next_if(|(t, _)| *t <= p.at_us) {
            let when = start + Duration::from_micros(*kill_at);
            if Instant::now() < when {
                real_tokio::time::sleep_until(when.into()).await;
            }
            let server = server.as_mut().expect("kills need a server to restart");
            cpu_before_kills += watch.cpu().unwrap_or(0.0);
            let down = chatsim_server::now();
            let began = Instant::now();
            // The sends due meanwhile wait: they go out late, their lateness counted in their
            // latency. The phones go on.
            let pid = restart(&mut **server, cfg.addr)
                .await
                .map_err(LoadError::Target)?;
            watch.pid = Some(pid);
            for h in cfg.hosts() {
                history_extra.push((down, Event::Fault(Fault::Kill(h))));
                history_extra.push((chatsim_server::now(), Event::Fault(Fault::Restart(h))));
            }
            report
                .kills
                .push((*aim, began.elapsed().as_secs_f64() * 1000.0));
            progress(&format!(
                "killed the server (SIGKILL, aiming {aim:?}); listening again after {:.0} ms",
                began.elapsed().as_secs_f64() * 1000.0
            ));
        }
        if Instant::now() < at {
            real_tokio::time::sleep_until(at.into()).await;
        } else if i % 16 == 0 {
            // Behind schedule: the phones share this thread and must get a turn.
            real_tokio::task::yield_now().await;
        }
        lag.saturating_record(Tally::since(at));
        tally.borrow_mut().intended.push(at);
        owed += sched.addressees(p) as u64;
        let body = body(i, spec.body_bytes);
        let action = match p.to {
            To::User(u) => Action::SendDirect {
                to: UserId(u),
                body,
            },
            To::Group(g) => Action::SendGroup { group: g, body },
        };
        let _ = phones[p.from as usize].send(action);
    }
    for t in toggles {
        toggle(t, &mut history_extra);
    }
    let load_end = Instant::now();
    let healed_ms = chatsim_server::now();
    history_extra.push((healed_ms, Event::Healed));
    {
        let mut t = tally.borrow_mut();
        t.measuring = false;
        report.held_at_end = t.connected_n;
    }
    let sends = sched.sends.len() as u64;
    progress(&format!(
        "load offered in {:.1} s; waiting up to {} s for every ✓ and display",
        (load_end - start).as_secs_f64(),
        spec.settle_s
    ));
    let t = tally.clone();
    until(Duration::from_secs_f64(spec.settle_s), || {
        let t = t.borrow();
        t.acked.len() as u64 >= sends && t.shown.len() as u64 >= owed
    })
    .await;
    // A little longer, so receipts and acks of the last displays land in the history too.
    real_tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu1 = (
        watch.cpu().map(|c| c + cpu_before_kills),
        proc_stats::cpu_s(std::process::id()),
    );
    report.server_rss_end_kib = watch.rss();
    ticker.abort();
    report.generator_stall = Quantiles::of(&stall.borrow());

    drop(phones);
    let mut records: Vec<(Millis, Event)> = history_extra;
    for task in tasks {
        let (_, recs) = task
            .await
            .map_err(|e| LoadError::Target(format!("a phone task failed: {e}")))?;
        records.extend(recs.into_iter().map(|r| (r.t, r.event)));
    }
    let end_ms = chatsim_server::now();

    read_tally(
        &mut report,
        &tally.borrow(),
        (start, load_end),
        (sends, owed),
        &lag,
    );
    cpu_figures(&mut report, cpu0, cpu1);

    let mut history = History::with_devices(n, 1);
    records.sort_by_key(|(t, _)| *t);
    for (t, e) in records {
        history.push(t.saturating_sub(t0_ms), e);
    }
    history.end = end_ms.saturating_sub(t0_ms);
    let knobs = Knobs::default();
    let bounds = Bounds {
        liveness_ms: (spec.settle_s * 1000.0) as Millis,
        ack_p50_ms: 300,
        fetch_extra_ms: 0,
        fetch_max: knobs.gap_fetch_seqs_max,
        inbox_page: knobs.inbox_page_entries,
    };
    progress(&format!(
        "judging {} events with every checker",
        history.records.len()
    ));
    report.verdict = check_all(&history, bounds);
    let window = (report.generator_stall.max_ms.ceil() as Millis) + 1;
    for v in &mut report.verdict {
        if v.name == chatsim_judge::bounds::RECONNECT_LOAD {
            *v = chatsim_judge::bounds::reconnect_load_within(&history, window);
        }
    }
    report.history_events = history.records.len();
    report.passed = report.verdict.iter().all(|v| v.holds) && report.displayed >= report.owed;
    Ok((report, history))
}

fn cpu_figures(
    r: &mut LoadReport,
    before: (Option<f64>, Option<f64>),
    after: (Option<f64>, Option<f64>),
) {
    if let (Some(a), Some(b)) = (before.0, after.0) {
        r.server_cpu_s = Some(b - a);
        r.server_cpu_ms_per_1k = Some((b - a) * 1e6 / (r.displayed.max(1) as f64));
    }
    if let (Some(a), Some(b)) = (before.1, after.1) {
        r.generator_cpu_s = Some(b - a);
    }
}

/// Run the same schedule's direct and group sends against the bare relay at `addr` (no
/// acks, no storage: a phone away would lose its messages, so nobody goes away).
pub fn run_floor(
    addr: SocketAddr,
    spec: &LoadSpec,
    watch: Watch,
    progress: &mut dyn FnMut(&str),
) -> Result<LoadReport, LoadError> {
    spec.validate()?;
    let spec = LoadSpec {
        away_share: 0,
        ..spec.clone()
    };
    let sched = Schedule::new(&spec);
    let rt = real_tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = real_tokio::task::LocalSet::new();
    local.block_on(&rt, drive_floor(addr, &spec, &sched, watch, progress))
}

async fn floor_client(
    addr: SocketAddr,
    me: u32,
    mut out: UnboundedReceiver<Vec<u8>>,
    tally: Rc<RefCell<Tally>>,
) {
    let attempt = async {
        let stream = real_tokio::net::TcpStream::connect(addr).await.ok()?;
        let _ = stream.set_nodelay(true);
        tokio_tungstenite::client_async(format!("ws://{addr}/"), stream)
            .await
            .ok()
    };
    let Some((ws, _)) = attempt.await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    if sink
        .send(Message::Binary(me.to_le_bytes().to_vec().into()))
        .await
        .is_err()
    {
        return;
    }
    tally.borrow_mut().connected(me as usize);
    let device = DeviceId {
        user: UserId(me),
        index: 0,
    };
    loop {
        real_tokio::select! {
            biased;
            m = out.recv() => match m {
                Some(b) => {
                    if sink.send(Message::Binary(b.into())).await.is_err() {
                        break;
                    }
                }
                None => {
                    let _ = sink.close().await;
                    return;
                }
            },
            m = source.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    let Some(i) = b.get(..4).map(|x| u32::from_le_bytes(x.try_into().expect("four bytes"))) else {
                        continue;
                    };
                    // The relay has no ids: the send's index stands in for one.
                    let id = MsgId { device, n: i };
                    tally.borrow_mut().shown(device, id, Some(i as usize), None);
                }
                Some(Ok(_)) => {}
                _ => break,
            }
        }
    }
    tally.borrow_mut().disconnected(me as usize);
}

async fn drive_floor(
    addr: SocketAddr,
    spec: &LoadSpec,
    sched: &Schedule,
    watch: Watch,
    progress: &mut dyn FnMut(&str),
) -> Result<LoadReport, LoadError> {
    let n = spec.devices;
    let tally = Rc::new(RefCell::new(Tally::new(n)));
    let mut report = LoadReport {
        target: "floor".into(),
        spec: Some(spec.clone()),
        server_rss_base_kib: watch.rss(),
        ..LoadReport::default()
    };
    progress(&format!(
        "connecting {n} relay clients, {} at a time",
        spec.connect_batch
    ));
    let mut clients: Vec<UnboundedSender<Vec<u8>>> = Vec::with_capacity(n as usize);
    let mut tasks = Vec::with_capacity(n as usize);
    let start_client = |u: u32| {
        let (tx, rx) = unbounded_channel();
        tasks.push(real_tokio::task::spawn_local(floor_client(
            addr,
            u,
            rx,
            tally.clone(),
        )));
        clients.push(tx);
    };
    let missing = |got: u32, want: u32| {
        format!(
            "only {got} of {want} relay clients connected within 30 s: is chatsim relay running \
             at {addr}?"
        )
    };
    connect_all(
        n,
        spec.connect_batch,
        &tally,
        watch,
        &mut report,
        start_client,
        missing,
    )
    .await?;
    progress(&format!(
        "{} clients connected in {:.1} s",
        report.connected, report.connect_all_s
    ));
    progress(&format!(
        "offering {} messages at {}/s for {} s",
        sched.sends.len(),
        spec.rate,
        spec.duration_s
    ));
    let cpu0 = (watch.cpu(), proc_stats::cpu_s(std::process::id()));
    let start = Instant::now() + Duration::from_millis(20);
    tally.borrow_mut().measuring = true;
    let mut lag = histogram();
    let mut owed = 0u64;
    // A chat text on the wire carries its sealed body and a header; the relay's payload is
    // given the same size so both move the same bytes.
    let payload_bytes = spec.body_bytes + 64;
    for (i, p) in sched.sends.iter().enumerate() {
        let at = start + Duration::from_micros(p.at_us);
        if Instant::now() < at {
            real_tokio::time::sleep_until(at.into()).await;
        } else if i % 16 == 0 {
            real_tokio::task::yield_now().await;
        }
        lag.saturating_record(Tally::since(at));
        tally.borrow_mut().intended.push(at);
        let to: Vec<u32> = match p.to {
            To::User(u) => vec![u],
            To::Group(g) => sched.groups[g as usize - 1]
                .iter()
                .copied()
                .filter(|m| *m != p.from)
                .collect(),
        };
        owed += to.len() as u64;
        let mut payload = (i as u32).to_le_bytes().to_vec();
        payload.resize(payload_bytes, b'.');
        let _ = clients[p.from as usize].send(relay::join(&to, &payload));
    }
    let load_end = Instant::now();
    {
        let mut t = tally.borrow_mut();
        t.measuring = false;
        report.held_at_end = t.connected_n;
    }
    let t = tally.clone();
    until(Duration::from_secs_f64(spec.settle_s), || {
        t.borrow().shown.len() as u64 >= owed
    })
    .await;
    let cpu1 = (watch.cpu(), proc_stats::cpu_s(std::process::id()));
    report.server_rss_end_kib = watch.rss();
    drop(clients);
    for task in tasks {
        let _ = task.await;
    }
    read_tally(
        &mut report,
        &tally.borrow(),
        (start, load_end),
        (sched.sends.len() as u64, owed),
        &lag,
    );
    cpu_figures(&mut report, cpu0, cpu1);
    report.passed = report.displayed >= report.owed;
    Ok(report)
}

/// The figures as a terminal shows them.
pub fn summary(r: &LoadReport) -> String {
    let mut s = String::new();
    let spec = r.spec.as_ref();
    let _ = writeln!(
        s,
        "chatsim load against {}: {} phones, {}/s for {} s",
        if r.target == "floor" {
            "the bare relay (floor)"
        } else {
            "chatsim serve"
        },
        spec.map_or(0, |s| s.devices),
        spec.map_or(0.0, |s| s.rate),
        spec.map_or(0.0, |s| s.duration_s),
    );
    let _ = writeln!(
        s,
        "  connections   {} connected ({} held at the end of the load, {} unplanned drops); connect {}; all in {:.1} s",
        r.connected, r.held_at_end, r.unplanned_drops, r.connect.line(), r.connect_all_s
    );
    let _ = writeln!(
        s,
        "  throughput    {:.0} sends/s offered and made, {:.0} displays/s; {} sends, {} acked, {} of {} displays",
        r.sent_per_s, r.delivered_per_s, r.sends, r.acked, r.displayed, r.owed
    );
    if r.target != "floor" {
        let _ = writeln!(s, "  send to ✓     {}", r.ack.line());
    }
    let _ = writeln!(s, "  send to shown {}", r.display.line());
    for (path, q) in &r.display_by_path {
        let _ = writeln!(s, "    {path:<11} {}", q.line());
    }
    let _ = writeln!(
        s,
        "  generator lag {} (inside the figures above)",
        r.generator_lag.line()
    );
    if r.generator_stall.count > 0 {
        let _ = writeln!(
            s,
            "  phones' thread stalled at most {:.1} ms (p99.9 {:.1} ms): reconnect bursts judged over windows that long",
            r.generator_stall.max_ms, r.generator_stall.p999_ms
        );
    }
    let kib = |v: Option<u64>| v.map_or("not measured".to_string(), |v| format!("{v} KiB"));
    let _ = writeln!(
        s,
        "  server memory {} before phones, {} with them idle, {} at the end; {} per idle connection",
        kib(r.server_rss_base_kib),
        kib(r.server_rss_idle_kib),
        kib(r.server_rss_end_kib),
        r.kib_per_idle_connection
            .map_or("not measured".into(), |k| format!("{k:.1} KiB"))
    );
    if let (Some(cpu), Some(per)) = (r.server_cpu_s, r.server_cpu_ms_per_1k) {
        let _ = writeln!(
            s,
            "  server CPU    {cpu:.2} s ({per:.1} ms per 1000 displays); generator {:.2} s",
            r.generator_cpu_s.unwrap_or(0.0)
        );
    }
    if let Some(b) = &r.beside_floor {
        let _ = writeln!(
            s,
            "  beside the floor (the same schedule through a bare relay): displays/s {:.0} vs {:.0} ({:.2}); p99 shown live {:.1} vs {:.1} ms ({:.1}x); server CPU per 1000 displays {} ({})",
            r.delivered_per_s,
            b.floor_delivered_per_s,
            b.delivered_ratio,
            r.live_p99_ms(),
            b.floor_display_p99_ms,
            b.display_p99_ratio,
            b.floor_cpu_ms_per_1k
                .map_or("not measured".into(), |f| format!("{:.0} vs {f:.0} ms", r.server_cpu_ms_per_1k.unwrap_or(0.0))),
            b.cpu_ratio.map_or("-".into(), |c| format!("{c:.1}x")),
        );
    }
    if r.target == "floor" {
        let _ = writeln!(
            s,
            "verdict: {} (the floor is judged only on delivering every message)",
            if r.passed {
                "delivered all"
            } else {
                "LOST MESSAGES"
            }
        );
        return s;
    }
    let _ = writeln!(s, "verdict on {} events:", r.history_events);
    for v in &r.verdict {
        let _ = writeln!(
            s,
            "  {} {:<22} checked {}{}",
            if v.holds { "ok  " } else { "FAIL" },
            v.name,
            v.checked,
            v.violations
                .first()
                .map_or(String::new(), |x| format!(": {}", x.detail))
        );
    }
    if r.displayed < r.owed {
        let _ = writeln!(
            s,
            "  FAIL {} displays never arrived within the settle time",
            r.owed - r.displayed
        );
    }
    let _ = writeln!(s, "verdict: {}", if r.passed { "PASS" } else { "FAIL" });
    s
}

/// Write `r` (and the judged history, for a chat run) into `dir`: run.json, history.jsonl,
/// the latency CDF and timeline charts, index.html.
pub fn write_report(dir: &Path, r: &LoadReport, history: Option<&History>) -> Result<(), String> {
    let w = crate::report::folder(dir)?;
    w(
        "run.json",
        serde_json::to_string_pretty(r).expect("figures are serialisable"),
    )?;
    let mut stems = vec![];
    if let Some(h) = history {
        w("history.jsonl", crate::report::history_jsonl(h))?;
        stems = vec!["latency", "timeline"];
        let lat = crate::report::latencies(h);
        let series = crate::report::cdf_series(&lat);
        let markers = [
            (r.display.p50_ms, format!("p50 {:.1} ms", r.display.p50_ms)),
            (r.display.p99_ms, format!("p99 {:.1} ms", r.display.p99_ms)),
        ];
        let lines = timeline(h, &[]);
        let windows = crate::report::fault_windows(h);
        draw_charts(dir, &stems, |tmp| {
            line_chart(
                tmp,
                "latency",
                "Delivery latency (CDF), by path; ms resolution",
                "ms from send to display",
                "fraction delivered",
                &series,
                &[],
                &markers,
            )?;
            line_chart(
                tmp,
                "timeline",
                "Phones connected and messages in flight; phones away shaded",
                "seconds",
                "count",
                &lines[..2],
                &windows,
                &[],
            )
        })?;
    }
    let mut b = format!(
        "<h1>chatsim load: {}</h1><pre>{}</pre>",
        esc(&r.target),
        esc(&summary(r))
    );
    if !stems.is_empty() {
        b.push_str(&chart_block(
            "latency",
            "Send to display, by path (from the judged history)",
        ));
        b.push_str(&chart_block(
            "timeline",
            "Phones connected and messages in flight",
        ));
        b.push_str("<p>The history every phone observed is in <a href=\"history.jsonl\">history.jsonl</a>; the figures in <a href=\"run.json\">run.json</a>.</p>");
    }
    w(
        "index.html",
        page(&format!("chatsim load ({})", r.target), &b),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LoadSpec {
        LoadSpec {
            devices: 50,
            rate: 200.0,
            duration_s: 5.0,
            groups: 4,
            group_size: 6,
            group_share: 30,
            away_share: 10,
            away_s: 1.5,
            settle_s: 5.0,
            connect_batch: 10,
            body_bytes: 32,
            seed: 9,
            kills: 3,
        }
    }

    #[test]
    fn a_schedule_is_drawn_from_its_seed_and_keeps_away_phones_from_sending() {
        let s = Schedule::new(&spec());
        let again = Schedule::new(&spec());
        assert_eq!(s.sends, again.sends, "same seed, same schedule");
        assert_eq!(s.away, again.away);
        assert_eq!(s.away.len(), 5);
        assert!(s.sends.len() > 900, "{}", s.sends.len());
        let groups = s
            .sends
            .iter()
            .filter(|p| matches!(p.to, To::Group(_)))
            .count();
        assert!(groups > 0, "some texts go to groups");
        for p in &s.sends {
            if let To::User(u) = p.to {
                assert_ne!(u, p.from, "nobody texts themselves");
            }
            if let To::Group(g) = p.to {
                assert!(
                    s.groups[g as usize - 1].contains(&p.from),
                    "senders are members"
                );
            }
            for (u, a, b) in &s.away {
                assert!(
                    *u != p.from || p.at_us + 1_000_000 < *a || p.at_us >= *b,
                    "{p:?} sends while away"
                );
            }
        }
        assert!(s.sends.windows(2).all(|w| w[0].at_us <= w[1].at_us));
        let aims: Vec<KillPoint> = s.kills.iter().map(|k| k.1).collect();
        for aim in [
            KillPoint::MidFanout,
            KillPoint::MidDrain,
            KillPoint::Anywhere,
        ] {
            assert!(aims.contains(&aim), "{aims:?}");
        }
        let other = Schedule::new(&LoadSpec { seed: 10, ..spec() });
        assert_ne!(s.sends, other.sends);
    }

    #[test]
    fn a_text_says_which_send_it_is() {
        let b = body(1234, 40);
        assert_eq!(b.len(), 40);
        assert_eq!(index_of(&b), Some(1234));
        assert_eq!(index_of(b"hello"), None);
    }

    #[test]
    fn a_spec_that_cannot_run_names_its_flag() {
        let e = LoadSpec {
            rate: 0.0,
            ..spec()
        }
        .validate()
        .expect_err("no rate");
        assert!(e.to_string().starts_with("--rate"), "{e}");
        let e = LoadSpec {
            devices: 1,
            ..spec()
        }
        .validate()
        .expect_err("alone");
        assert!(e.to_string().starts_with("--devices"), "{e}");
    }
}
