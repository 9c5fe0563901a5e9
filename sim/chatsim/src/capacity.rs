//! `chatsim capacity`: the design's back-of-envelope estimates as a calculator that shows its
//! working, and `--check`, which runs a scaled world through the simulator and compares what
//! the same formulas predict for it with what the run measured.
//!
//! The real figures cannot be simulated on one machine (a thousand gateways, 1.2 million
//! messages a second), but the formulas can be: a scaled world keeps the ratios that shape the
//! per-host figures (devices per user, the share of messages sent to groups, group size) at a
//! size that runs in seconds, and the check says whether the system spreads connections,
//! messages, bytes and deliveries the way the arithmetic assumes.

use crate::run::{run_seed_keeping, Engine, Keep, RunReport};
use crate::scenario::Scenario;
use chatsim_system::bugs::Bugs;
use chatsim_system::proto::{Host, MsgId};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

const DAY_S: f64 = 86_400.0;

/// Every assumption the estimate rests on; each is a flag of `chatsim capacity`.
#[derive(Clone, Debug, Serialize, PartialEq, clap::Args)]
pub struct Assumptions {
    /// Registered users.
    #[arg(long, default_value_t = Assumptions::default().users)]
    pub users: f64,
    /// Messages sent per day, all users.
    #[arg(long, default_value_t = Assumptions::default().messages_per_day)]
    pub messages_per_day: f64,
    /// Bytes of one message as stored (text, ids, timestamps).
    #[arg(long, default_value_t = Assumptions::default().bytes_per_message)]
    pub bytes_per_message: f64,
    /// Peak rate over the day's average.
    #[arg(long, default_value_t = Assumptions::default().peak_factor)]
    pub peak_factor: f64,
    /// Share of users connected at once.
    #[arg(long, default_value_t = Assumptions::default().concurrent_share)]
    pub concurrent_share: f64,
    /// Connections one gateway holds.
    #[arg(long, default_value_t = Assumptions::default().connections_per_gateway)]
    pub connections_per_gateway: f64,
    /// Messages a second one chat shard sequences and persists at peak.
    #[arg(long, default_value_t = Assumptions::default().shard_messages_per_s)]
    pub shard_messages_per_s: f64,
    /// Share of deliveries whose device is offline, so they wait in the inbox.
    #[arg(long, default_value_t = Assumptions::default().offline_share)]
    pub offline_share: f64,
    /// Share of messages sent to groups.
    #[arg(long, default_value_t = Assumptions::default().group_share)]
    pub group_share: f64,
    /// Members of a group, on average, the sender included.
    #[arg(long, default_value_t = Assumptions::default().group_size)]
    pub group_size: f64,
    /// Devices per user (a phone plus companions).
    #[arg(long, default_value_t = Assumptions::default().devices_per_user)]
    pub devices_per_user: f64,
    /// Copies storage keeps of each message.
    #[arg(long, default_value_t = Assumptions::default().replicas)]
    pub replicas: f64,
}

impl Default for Assumptions {
    /// The design page's figures: 2 billion users, 100 billion messages a day of about 200
    /// bytes, 500 million connected at once, a few hundred thousand to a million connections a
    /// gateway. The rest are this calculator's assumptions, stated as such.
    fn default() -> Self {
        Assumptions {
            users: 2e9,
            messages_per_day: 100e9,
            bytes_per_message: 200.0,
            peak_factor: 3.0,
            concurrent_share: 0.25,
            connections_per_gateway: 500_000.0,
            shard_messages_per_s: 10_000.0,
            offline_share: 0.3,
            group_share: 0.3,
            group_size: 8.0,
            devices_per_user: 1.0,
            replicas: 3.0,
        }
    }
}

impl Assumptions {
    /// Every figure positive and every share a share: an error naming the flag otherwise.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("--users", self.users),
            ("--messages-per-day", self.messages_per_day),
            ("--bytes-per-message", self.bytes_per_message),
            ("--connections-per-gateway", self.connections_per_gateway),
            ("--shard-messages-per-s", self.shard_messages_per_s),
        ];
        for (flag, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{flag}: {v}: must be a positive number"));
            }
        }
        let shares = [
            ("--concurrent-share", self.concurrent_share),
            ("--offline-share", self.offline_share),
            ("--group-share", self.group_share),
        ];
        for (flag, v) in shares {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{flag}: {v}: a share lies between 0 and 1"));
            }
        }
        let at_least_one = [
            ("--peak-factor", self.peak_factor, 1.0),
            ("--group-size", self.group_size, 2.0),
            ("--devices-per-user", self.devices_per_user, 1.0),
            ("--replicas", self.replicas, 1.0),
        ];
        for (flag, v, min) in at_least_one {
            if !(v.is_finite() && v >= min) {
                return Err(format!("{flag}: {v}: must be at least {min}"));
            }
        }
        Ok(())
    }
}

/// What follows from the assumptions.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Estimate {
    /// Messages a second, averaged over the day.
    pub average_messages_per_s: f64,
    /// Messages a second at peak.
    pub peak_messages_per_s: f64,
    /// Bytes of messages a day, one copy.
    pub bytes_per_day: f64,
    /// Bytes written a day with every replica.
    pub stored_bytes_per_day: f64,
    /// Devices connected at once.
    pub concurrent_connections: f64,
    /// Gateways to hold them.
    pub gateways: f64,
    /// Chat shards to sequence the peak.
    pub shards: f64,
    /// Deliveries one message makes (recipients' devices and the sender's other devices).
    pub deliveries_per_message: f64,
    /// Deliveries a second at peak.
    pub peak_deliveries_per_s: f64,
    /// Inbox entries written a second at peak (deliveries to offline devices).
    pub peak_inbox_writes_per_s: f64,
}

/// Deliveries one message makes: a direct text reaches the other user's devices, a group
/// text every other member's, and either reaches the sender's own other devices.
pub fn deliveries_per_message(a: &Assumptions) -> f64 {
    let recipients = (1.0 - a.group_share) + a.group_share * (a.group_size - 1.0);
    recipients * a.devices_per_user + (a.devices_per_user - 1.0)
}

/// The estimate.
pub fn estimate(a: &Assumptions) -> Estimate {
    let average = a.messages_per_day / DAY_S;
    let peak = average * a.peak_factor;
    let concurrent = a.users * a.concurrent_share * a.devices_per_user;
    let per_message = deliveries_per_message(a);
    Estimate {
        average_messages_per_s: average,
        peak_messages_per_s: peak,
        bytes_per_day: a.messages_per_day * a.bytes_per_message,
        stored_bytes_per_day: a.messages_per_day * a.bytes_per_message * a.replicas,
        concurrent_connections: concurrent,
        gateways: (concurrent / a.connections_per_gateway).ceil(),
        shards: (peak / a.shard_messages_per_s).ceil(),
        deliveries_per_message: per_message,
        peak_deliveries_per_s: peak * per_message,
        peak_inbox_writes_per_s: peak * per_message * a.offline_share,
    }
}

/// A number a person reads at a glance: 1.16M, 20.0T, 350.
pub fn human(x: f64) -> String {
    let (v, unit) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(scale, _)| x.abs() >= *scale)
        .map_or((x, ""), |(scale, unit)| (x / scale, unit));
    if unit.is_empty() && v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}{unit}")
    } else {
        format!("{v:.2}{unit}")
    }
}

/// The derivation, a line per figure: formula, numbers, result.
pub fn derivation(a: &Assumptions, e: &Estimate) -> String {
    let h = human;
    let mut s = String::new();
    let mut line = |what: &str, how: String, value: String| {
        let _ = writeln!(s, "  {what:<28} {how:<52} = {value}");
    };
    line(
        "average msg/s",
        format!("{} msgs/day / 86,400 s", h(a.messages_per_day)),
        h(e.average_messages_per_s),
    );
    line(
        "peak msg/s",
        format!(
            "{} x peak factor {}",
            h(e.average_messages_per_s),
            a.peak_factor
        ),
        h(e.peak_messages_per_s),
    );
    line(
        "bytes/day",
        format!(
            "{} msgs x {} B",
            h(a.messages_per_day),
            h(a.bytes_per_message)
        ),
        format!("{}B", h(e.bytes_per_day)),
    );
    line(
        "stored bytes/day",
        format!("{}B x {} replicas", h(e.bytes_per_day), a.replicas),
        format!("{}B", h(e.stored_bytes_per_day)),
    );
    line(
        "concurrent connections",
        format!(
            "{} users x {} online x {} devices",
            h(a.users),
            a.concurrent_share,
            a.devices_per_user
        ),
        h(e.concurrent_connections),
    );
    line(
        "gateways",
        format!(
            "{} / {} per gateway, rounded up",
            h(e.concurrent_connections),
            h(a.connections_per_gateway)
        ),
        format!("{:.0}", e.gateways),
    );
    line(
        "chat shards",
        format!(
            "{} peak msg/s / {} per shard, rounded up",
            h(e.peak_messages_per_s),
            h(a.shard_messages_per_s)
        ),
        format!("{:.0}", e.shards),
    );
    line(
        "deliveries per message",
        format!(
            "({} direct + {} group x {} others) x {} dev + {} own",
            1.0 - a.group_share,
            a.group_share,
            a.group_size - 1.0,
            a.devices_per_user,
            a.devices_per_user - 1.0
        ),
        format!("{:.2}", e.deliveries_per_message),
    );
    line(
        "peak fan-out deliveries/s",
        format!(
            "{} peak msg/s x {:.2}",
            h(e.peak_messages_per_s),
            e.deliveries_per_message
        ),
        h(e.peak_deliveries_per_s),
    );
    line(
        "peak inbox writes/s",
        format!(
            "{} deliveries/s x {} offline",
            h(e.peak_deliveries_per_s),
            a.offline_share
        ),
        h(e.peak_inbox_writes_per_s),
    );
    s
}

/// How big the scaled world of `--check` is.
#[derive(Clone, Debug, Serialize)]
pub struct Scaled {
    /// Users.
    pub users: u32,
    /// Gateways.
    pub gateways: u16,
    /// Chat shards.
    pub shards: u16,
    /// Direct messages.
    pub direct_messages: u32,
    /// Group messages.
    pub group_messages: u32,
    /// Groups.
    pub groups: u32,
    /// Group size range drawn per group.
    pub group_size: (u32, u32),
    /// The send window (ms).
    pub window_ms: u64,
    /// The seed.
    pub seed: u64,
}

impl Scaled {
    /// A world of `users` with the assumptions' ratios: group share, group size, devices per
    /// user. A day's messages per user are compressed into a minute, so every host sees
    /// enough traffic to measure.
    pub fn of(a: &Assumptions, users: u32, seed: u64) -> Scaled {
        let messages = users.saturating_mul(4);
        let group_messages = (f64::from(messages) * a.group_share).round() as u32;
        let size = a.group_size.round().max(2.0) as u32;
        Scaled {
            users,
            gateways: 4,
            shards: 4,
            direct_messages: messages - group_messages,
            group_messages,
            groups: (users / size / 4).max(1),
            group_size: (size.saturating_sub(2).max(2), size + 2),
            window_ms: 60_000,
            seed,
        }
    }

    /// The scenario file's text.
    pub fn scenario_text(&self, a: &Assumptions) -> String {
        let devices = a.devices_per_user.round().clamp(1.0, 4.0) as u8;
        format!(
            "# capacity --check: the estimate's ratios at a size one machine runs in seconds.\n\
             description = \"capacity check: {users} users, {gw} gateways, {sh} shards\"\n\n\
             [topology]\nusers = {users}\ngateways = {gw}\nshards = {sh}\ndevices_per_user = {devices}\n\n\
             [workload]\nmessages = {direct}\nconversations = {conversations}\nsend_window_ms = [1000, {end}]\n\n\
             [workload.groups]\ncount = {groups}\nsize = [{lo}, {hi}]\nmessages = {group}\nchanges = [0, 0]\n\n\
             [network]\nlatency_ms = [1, 10]\n\n\
             [run]\nheal_at_ms = {end}\nsettle_ms = 20000\nliveness_ms = 20000\n",
            users = self.users,
            gw = self.gateways,
            sh = self.shards,
            direct = self.direct_messages,
            conversations = self.users,
            end = self.window_ms + 1000,
            groups = self.groups,
            lo = self.group_size.0,
            hi = self.group_size.1,
            group = self.group_messages,
        )
    }
}

/// One predicted figure against what the scaled run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Compared {
    /// What is compared.
    pub figure: &'static str,
    /// What the formula predicts for the scaled world.
    pub predicted: f64,
    /// What the run measured.
    pub measured: f64,
    /// The largest |measured / predicted - 1| that passes.
    pub tolerance: f64,
    /// Why the tolerance is what it is.
    pub why: &'static str,
    /// Whether it is within.
    pub within: bool,
}

fn compared(
    figure: &'static str,
    predicted: f64,
    measured: f64,
    tolerance: f64,
    why: &'static str,
) -> Compared {
    let within = predicted > 0.0 && (measured / predicted - 1.0).abs() <= tolerance;
    Compared {
        figure,
        predicted,
        measured,
        tolerance,
        why,
        within,
    }
}

/// What the check found.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// The world that ran.
    pub world: Scaled,
    /// Whether every invariant held in the run (a capacity figure of a broken run means
    /// nothing).
    pub invariants_hold: bool,
    /// Predicted against measured.
    pub figures: Vec<Compared>,
}

impl Check {
    /// Whether the run held and every figure is within its tolerance.
    pub fn passed(&self) -> bool {
        self.invariants_hold && self.figures.iter().all(|f| f.within)
    }
}

/// Each device's gateway: the one its last `Hello` went to.
fn connections_per_gateway(r: &RunReport) -> BTreeMap<u16, usize> {
    let mut at = BTreeMap::new();
    for f in &r.frame_log {
        if let (Host::Device(d), Host::Gateway(g)) = (f.from, f.to) {
            if f.label.starts_with("Hello") {
                at.insert(d, g);
            }
        }
    }
    let mut per = BTreeMap::new();
    for g in at.values() {
        *per.entry(*g).or_default() += 1;
    }
    per
}

/// Measure the scaled world and compare.
pub fn check(a: &Assumptions, users: u32, seed: u64) -> Result<Check, String> {
    let world = Scaled::of(a, users, seed);
    let text = world.scenario_text(a);
    let scenario = Scenario::parse(Path::new("capacity-check.toml"), &text)
        .map_err(|e| format!("the scaled world: {e}"))?;
    let r = run_seed_keeping(
        Engine::Madsim,
        &scenario,
        seed,
        &Bugs::default(),
        Keep::REPORT,
    )
    .map_err(|e| e.to_string())?;
    if r.frame_log.len() >= crate::record::FRAME_LOG_MAX {
        return Err(format!(
            "the scaled world logged more than {} frames: lower --check-users",
            crate::record::FRAME_LOG_MAX
        ));
    }
    let devices = f64::from(users) * a.devices_per_user.round().clamp(1.0, 4.0);
    let mut figures = Vec::new();

    // Connections: the design assumes connections spread evenly; the busiest gateway is what
    // must fit.
    let per_gateway = connections_per_gateway(&r);
    let busiest = per_gateway.values().copied().max().unwrap_or(0) as f64;
    figures.push(compared(
        "connections on the busiest gateway",
        devices / f64::from(world.gateways),
        busiest,
        0.25,
        "gateways are picked per device by hash: a few hundred devices a gateway spread within a quarter",
    ));

    // Messages per shard: what each shard sequenced (an Append it sent storage), per second
    // of the send window; the busiest shard is what must keep up.
    let mut per_shard: BTreeMap<u16, BTreeSet<MsgId>> = BTreeMap::new();
    let mut append_bytes = 0u64;
    let mut appended: BTreeSet<MsgId> = BTreeSet::new();
    for f in &r.frame_log {
        if let (Host::Shard(s), Host::Storage(_), Some(id)) = (f.from, f.to, f.msg) {
            if f.label.starts_with("Append") && appended.insert(id) {
                per_shard.entry(s).or_default().insert(id);
                append_bytes += u64::from(f.bytes);
            }
        }
    }
    let window_s = world.window_ms as f64 / 1000.0;
    let total = f64::from(world.direct_messages + world.group_messages);
    let busiest_shard = per_shard.values().map(BTreeSet::len).max().unwrap_or(0) as f64;
    figures.push(compared(
        "msg/s on the busiest shard",
        total / window_s / f64::from(world.shards),
        busiest_shard / window_s,
        0.35,
        "conversations are owned by hash, and one busy group lands whole on one shard",
    ));

    // Bytes: a stored message is its text plus what end-to-end encryption adds per device
    // it is sealed for, plus the envelope (ids, sequence, timestamps).
    let measured_bytes = append_bytes as f64 / appended.len().max(1) as f64;
    let mut bodies: BTreeMap<MsgId, usize> = BTreeMap::new();
    for rec in &r.history.records {
        if let chatsim_judge::Event::Device {
            obs: chatsim_system::Observation::Displayed { id, body, .. },
            ..
        } = &rec.event
        {
            bodies.insert(*id, body.len());
        }
    }
    let body = bodies.values().sum::<usize>() as f64 / bodies.len().max(1) as f64;
    let devices_per_user = a.devices_per_user.round().clamp(1.0, 4.0);
    let group_share = f64::from(world.group_messages) / total;
    let members = f64::from(world.group_size.0 + world.group_size.1) / 2.0;
    // A direct text is one copy per device it is for (the recipient's and the sender's
    // others), each sealed for that device.
    let copies = devices_per_user * 2.0 - 1.0;
    let direct = ENVELOPE_BYTES + copies * (body + SEAL_OVERHEAD_BYTES);
    // A group text is sealed once under the sender's key and lists each other member's
    // devices; the first text of each sender in a group also hands every other member
    // device its key. Senders are drawn uniformly among members, so a group's distinct
    // senders over m texts are about members x (1 - (1 - 1/members)^m).
    let per_group = f64::from(world.group_messages) / f64::from(world.groups);
    let senders = members * (1.0 - (1.0 - 1.0 / members).powf(per_group));
    // The sender's own other devices are on the list too.
    let listed = (members - 1.0) * devices_per_user + (devices_per_user - 1.0);
    let handouts = senders * listed / per_group.max(1.0);
    let group = ENVELOPE_BYTES + body + listed * MEMBER_ENTRY_BYTES + handouts * SENDER_KEY_BYTES;
    let predicted_bytes = (1.0 - group_share) * direct + group_share * group;
    figures.push(compared(
        "stored bytes per message",
        predicted_bytes,
        measured_bytes,
        0.25,
        "wire constants calibrated on a direct-only, a two-device and a group-only world; checked on this mix",
    ));

    // Deliveries: every (message, device) shown once.
    let per_message = deliveries_per_message(&Assumptions {
        group_share: f64::from(world.group_messages) / total,
        group_size: f64::from(world.group_size.0 + world.group_size.1) / 2.0,
        ..a.clone()
    });
    figures.push(compared(
        "deliveries per message",
        per_message,
        r.stats.messages_delivered as f64 / r.stats.messages_sent.max(1) as f64,
        0.15,
        "group sizes are drawn per group, so the mean size varies around the assumption",
    ));
    Ok(Check {
        world,
        invariants_hold: r.passed(),
        figures,
    })
}

// The wire constants below are calibrated, not design figures: each was read off a scaled
// world of one kind (`--group-share 0`; `--group-share 0 --devices-per-user 2`;
// `--group-share 0.99`, 500 users, seed 1), and `--check` holds them against the mixed world.

/// The envelope of a stored message on the storage link: ids, conversation, sequence, sender,
/// timestamps, framing (a one-device direct world: 70.5 bytes a 12-byte text).
pub const ENVELOPE_BYTES: f64 = 35.5;
/// What sealing one copy for one device adds to its text (three copies a text with two
/// devices a user measured 70 bytes more than one).
pub const SEAL_OVERHEAD_BYTES: f64 = 23.0;
/// A group text's entry per other member device in its recipient and fan-out lists.
pub const MEMBER_ENTRY_BYTES: f64 = 6.4;
/// One sender-key handout: a 40-byte key and version, sealed for one device.
pub const SENDER_KEY_BYTES: f64 = 63.0;

/// The check as a table.
pub fn check_table(c: &Check) -> String {
    let mut s = String::new();
    let w = &c.world;
    let _ = writeln!(
        s,
        "scaled world: {} users, {} gateways, {} shards, {} direct and {} group messages in {} s (seed {}); invariants {}",
        w.users,
        w.gateways,
        w.shards,
        w.direct_messages,
        w.group_messages,
        w.window_ms / 1000,
        w.seed,
        if c.invariants_hold { "hold" } else { "BROKEN" }
    );
    let _ = writeln!(
        s,
        "  {:<36} {:>10} {:>10} {:>8}  verdict",
        "figure", "predicted", "measured", "within"
    );
    for f in &c.figures {
        let _ = writeln!(
            s,
            "  {:<36} {:>10.1} {:>10.1} {:>7.0}%  {}  ({:+.1}%: {})",
            f.figure,
            f.predicted,
            f.measured,
            f.tolerance * 100.0,
            if f.within { "ok" } else { "OFF" },
            (f.measured / f.predicted - 1.0) * 100.0,
            f.why
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_figures_come_out_of_the_default_assumptions() {
        let e = estimate(&Assumptions::default());
        assert!((e.average_messages_per_s - 1.157e6).abs() < 1e3, "{e:?}");
        assert!((e.bytes_per_day - 20e12).abs() < 1e9, "about 20 TB a day");
        assert_eq!(e.concurrent_connections, 500e6);
        assert_eq!(e.gateways, 1000.0, "about a thousand gateways");
        assert_eq!(e.shards, 348.0, "3.47M peak msg/s at 10k a shard");
        assert!((e.deliveries_per_message - 2.8).abs() < 1e-9);
    }

    #[test]
    fn deliveries_count_companions_and_group_members() {
        let a = Assumptions {
            group_share: 0.5,
            group_size: 5.0,
            devices_per_user: 2.0,
            ..Assumptions::default()
        };
        // (0.5 x 1 + 0.5 x 4) x 2 devices + 1 own other device.
        assert!((deliveries_per_message(&a) - 6.0).abs() < 1e-9);
    }

    #[test]
    fn human_numbers_read_at_a_glance() {
        assert_eq!(human(1_157_407.0), "1.16M");
        assert_eq!(human(20e12), "20.00T");
        assert_eq!(human(348.0), "348");
        assert_eq!(human(500e6), "500M");
    }

    #[test]
    fn a_figure_outside_its_tolerance_fails_the_check() {
        assert!(compared("x", 100.0, 124.0, 0.25, "").within);
        assert!(!compared("x", 100.0, 126.0, 0.25, "").within);
        assert!(!compared("x", 100.0, 74.0, 0.25, "").within);
        assert!(
            !compared("x", 0.0, 0.0, 0.25, "").within,
            "nothing predicted"
        );
    }
}
