//! Validation: every range check a scenario must pass after parsing, the bounds they check
//! against (named, with their unit), and how an error names the file and the field.

use super::{action_name, parse_host, EventAction, FaultKind, Range, Role};
use super::{Scenario, ScenarioError, ScheduledEvent};
use chatsim_system::attack::ATTACK_NAMES;
use std::path::Path;

/// The fewest users a scenario may have: a conversation needs two.
pub const USERS_MIN: u32 = 2;
/// The most users a scenario may ask for on the 1:1 path.
pub const USERS_MAX: u32 = 200_000;
/// The fewest gateways: devices need one to connect to.
pub const GATEWAYS_MIN: u16 = 1;
/// The most gateways a topology may have.
pub const GATEWAYS_MAX: u16 = 64;
/// The fewest chat shards: conversations need one to own them.
pub const SHARDS_MIN: u16 = 1;
/// The most chat shards a topology may have.
pub const SHARDS_MAX: u16 = 64;
/// The largest clock skew of a phone, in ms (a day).
pub const CLOCK_SKEW_MS_MAX: u64 = 86_400_000;
/// The fewest storage replicas when there are any (with fewer, a majority is not a quorum
/// that survives a loss).
pub const REPLICAS_MIN: u16 = 3;
/// The most storage replicas.
pub const REPLICAS_MAX: u16 = 7;
/// The most messages a scenario may ask for.
pub const MESSAGES_MAX: u32 = 10_000_000;
/// The most groups a scenario may create (each is a creation write and a membership log).
pub const GROUPS_MAX: u32 = 100_000;
/// The most faults one `[[fault]]` entry may draw (its `count` range's top): a plan holds
/// each one, and a run injects and heals each.
pub const FAULTS_PER_ENTRY_MAX: u64 = 100_000;
/// The most times users may open a chat, or put the app in the background, in one run.
pub const USER_ACTIONS_MAX: u32 = 1_000_000;
/// The most membership changes a group workload may draw (its `changes` range's top).
pub const GROUP_CHANGES_MAX: u64 = 1_000_000;
/// The shortest one-way latency of a frame, in ms: a frame never arrives the instant it is
/// sent.
pub const LATENCY_MS_MIN: u64 = 1;
/// The fewest members a group may be created with, the creator included.
pub const GROUP_MEMBERS_MIN: u64 = 2;
/// The longest simulated run, in ms (one simulated day).
pub const RUN_MS_MAX: u64 = 86_400_000;

impl Range {
    fn check(&self, path: &Path, field: &str) -> Result<(), ScenarioError> {
        if self.lo > self.hi {
            return Err(invalid(
                path,
                field,
                format!(
                    "range [{}, {}] has its lower bound above its upper",
                    self.lo, self.hi
                ),
            ));
        }
        Ok(())
    }
}

fn invalid(path: &Path, field: &str, reason: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        path: path.to_owned(),
        field: field.to_owned(),
        reason: reason.into(),
    }
}

impl Scenario {
    pub(super) fn validate(&self) -> Result<(), ScenarioError> {
        let p = self.path.as_path();
        match &self.buggify_never {
            Some(_) if self.buggify => {
                return Err(invalid(
                    p,
                    "buggify_never",
                    "says the scenario must never buggify, but the file sets `buggify = true`",
                ));
            }
            Some(why) if why.trim().is_empty() => {
                return Err(invalid(
                    p,
                    "buggify_never",
                    "is empty: say why the scenario must never buggify",
                ));
            }
            _ => {}
        }
        let t = &self.topology;
        if !(USERS_MIN..=USERS_MAX).contains(&t.users) {
            return Err(invalid(
                p,
                "topology.users",
                format!(
                    "must be between {USERS_MIN} and {USERS_MAX}, is {}",
                    t.users
                ),
            ));
        }
        if !(GATEWAYS_MIN..=GATEWAYS_MAX).contains(&t.gateways) {
            return Err(invalid(
                p,
                "topology.gateways",
                format!(
                    "must be between {GATEWAYS_MIN} and {GATEWAYS_MAX}, is {}",
                    t.gateways
                ),
            ));
        }
        if !(SHARDS_MIN..=SHARDS_MAX).contains(&t.shards) {
            return Err(invalid(
                p,
                "topology.shards",
                format!(
                    "must be between {SHARDS_MIN} and {SHARDS_MAX}, is {}",
                    t.shards
                ),
            ));
        }
        if t.clock_skew_ms.is_some_and(|s| s > CLOCK_SKEW_MS_MAX) {
            return Err(invalid(
                p,
                "topology.clock_skew_ms",
                format!("must be at most {CLOCK_SKEW_MS_MAX} (a day)"),
            ));
        }
        if t.replicas != 0
            && !(t.replicas % 2 == 1 && (REPLICAS_MIN..=REPLICAS_MAX).contains(&t.replicas))
        {
            return Err(invalid(
                p,
                "topology.replicas",
                format!(
                    "must be 0 (one storage node) or an odd number from {REPLICAS_MIN} to {REPLICAS_MAX} (a majority must be a quorum), is {}",
                    t.replicas
                ),
            ));
        }
        let devices_max = 1 + chatsim_system::limits::COMPANIONS_MAX;
        if !(1..=devices_max).contains(&t.devices_per_user) {
            return Err(invalid(
                p,
                "topology.devices_per_user",
                format!(
                    "must be between 1 and {devices_max} (a phone and up to {} companions), is {}",
                    devices_max - 1,
                    t.devices_per_user
                ),
            ));
        }
        let w = &self.workload;
        for (field, n) in [
            ("workload.opens", w.opens),
            ("workload.backgrounds", w.backgrounds),
        ] {
            if n > USER_ACTIONS_MAX {
                return Err(invalid(
                    p,
                    field,
                    format!("must be at most {USER_ACTIONS_MAX}, is {n}"),
                ));
            }
        }
        if w.messages > MESSAGES_MAX {
            return Err(invalid(
                p,
                "workload.messages",
                format!("must be at most {MESSAGES_MAX}, is {}", w.messages),
            ));
        }
        let pairs = u64::from(t.users) * u64::from(t.users - 1) / 2;
        if (w.messages > 0 && w.conversations == 0) || u64::from(w.conversations) > pairs {
            return Err(invalid(
                p,
                "workload.conversations",
                format!(
                    "must be between 1 and {pairs} (pairs of {} users), is {}",
                    t.users, w.conversations
                ),
            ));
        }
        w.send_window_ms.check(p, "workload.send_window_ms")?;
        w.open_ms.check(p, "workload.open_ms")?;
        w.background_ms.check(p, "workload.background_ms")?;
        self.push.delay_ms.check(p, "push.delay_ms")?;
        if self.push.loss_percent > 100 {
            return Err(invalid(
                p,
                "push.loss_percent",
                format!("must be 0 to 100, is {}", self.push.loss_percent),
            ));
        }
        self.network.latency_ms.check(p, "network.latency_ms")?;
        if self.network.latency_ms.lo < LATENCY_MS_MIN {
            return Err(invalid(
                p,
                "network.latency_ms",
                format!("latency must be at least {LATENCY_MS_MIN} ms"),
            ));
        }
        if let Some(g) = &w.groups {
            let cap = (chatsim_system::limits::GROUP_MEMBERS_MAX as u64).min(u64::from(t.users));
            if g.count == 0 {
                return Err(invalid(p, "workload.groups.count", "must be at least 1"));
            }
            if g.count > GROUPS_MAX {
                return Err(invalid(
                    p,
                    "workload.groups.count",
                    format!("must be at most {GROUPS_MAX}, is {}", g.count),
                ));
            }
            g.size.check(p, "workload.groups.size")?;
            if g.size.lo < GROUP_MEMBERS_MIN || g.size.hi > cap {
                return Err(invalid(
                    p,
                    "workload.groups.size",
                    format!(
                        "must lie within [{GROUP_MEMBERS_MIN}, {cap}] (the group cap and the users), is [{}, {}]",
                        g.size.lo, g.size.hi
                    ),
                ));
            }
            if g.messages > MESSAGES_MAX {
                return Err(invalid(
                    p,
                    "workload.groups.messages",
                    format!("must be at most {MESSAGES_MAX}, is {}", g.messages),
                ));
            }
            g.changes.check(p, "workload.groups.changes")?;
            if g.changes.hi > GROUP_CHANGES_MAX {
                return Err(invalid(
                    p,
                    "workload.groups.changes",
                    format!(
                        "must be at most {GROUP_CHANGES_MAX}, is [{}, {}]",
                        g.changes.lo, g.changes.hi
                    ),
                ));
            }
            if g.create_at_ms > w.send_window_ms.lo {
                return Err(invalid(
                    p,
                    "workload.groups.create_at_ms",
                    format!(
                        "groups must be created before the send window opens ({} ms)",
                        w.send_window_ms.lo
                    ),
                ));
            }
        }
        let group_messages = w.groups.as_ref().map_or(0, |g| g.messages);
        if w.messages == 0 && group_messages == 0 && self.schedule.is_empty() {
            return Err(invalid(
                p,
                "workload",
                "no messages: give `workload.messages` or `[[event]]` sends",
            ));
        }
        for (i, e) in self.schedule.iter().enumerate() {
            self.validate_event(i, e)?;
        }
        for (i, l) in self.network.links.iter().enumerate() {
            l.extra_latency_ms
                .check(p, &format!("network.link[{i}].extra_latency_ms"))?;
            let device_link = matches!(
                (l.from, l.to),
                (Role::Device, Role::Gateway) | (Role::Gateway, Role::Device)
            );
            if (l.from == Role::Device || l.to == Role::Device) && !device_link {
                return Err(invalid(
                    p,
                    &format!("network.link[{i}]"),
                    "devices only talk to gateways",
                ));
            }
        }
        if self.end_ms() > RUN_MS_MAX {
            return Err(invalid(
                p,
                "run",
                format!(
                    "the run would last {} ms, more than {RUN_MS_MAX}",
                    self.end_ms()
                ),
            ));
        }
        if self.run.liveness_ms == 0 || self.run.liveness_ms > self.run.settle_ms {
            return Err(invalid(
                p,
                "run.liveness_ms",
                format!(
                    "must be between 1 and run.settle_ms ({}), is {}",
                    self.run.settle_ms, self.run.liveness_ms
                ),
            ));
        }
        for (i, f) in self.faults.iter().enumerate() {
            let field = |name: &str| format!("fault[{i}].{name}");
            f.count.check(p, &field("count"))?;
            if f.count.hi > FAULTS_PER_ENTRY_MAX {
                return Err(invalid(
                    p,
                    &field("count"),
                    format!(
                        "must be at most {FAULTS_PER_ENTRY_MAX}, is [{}, {}]",
                        f.count.lo, f.count.hi
                    ),
                ));
            }
            f.window_ms.check(p, &field("window_ms"))?;
            if f.window_ms.hi > self.run.heal_at_ms {
                return Err(invalid(
                    p,
                    &field("window_ms"),
                    format!(
                        "faults must start before run.heal_at_ms ({})",
                        self.run.heal_at_ms
                    ),
                ));
            }
            let server = matches!(
                f.kind,
                FaultKind::Kill
                    | FaultKind::Clog
                    | FaultKind::LatencySpike
                    | FaultKind::DiskSlow
                    | FaultKind::DiskFull
                    | FaultKind::Partition
                    | FaultKind::PartitionOneway
            );
            if f.targets.contains(&Role::Device) {
                return Err(invalid(
                    p,
                    &field("targets"),
                    "`device` is not a server role; use a device-* fault kind",
                ));
            }
            let disks = match f.kind {
                FaultKind::DiskSlow => &[Role::Storage, Role::Replica][..],
                FaultKind::DiskFull => &[Role::Storage][..],
                _ => &[],
            };
            if !disks.is_empty() && f.targets.iter().any(|r| !disks.contains(r)) {
                return Err(invalid(
                    p,
                    &field("targets"),
                    if f.kind == FaultKind::DiskFull {
                        "only storage's disk fills (a replica refusing some operations would leave holes in its log)"
                    } else {
                        "only storage and replicas have a disk that syncs"
                    },
                ));
            }
            if server && f.targets.is_empty() {
                return Err(invalid(
                    p,
                    &field("targets"),
                    "a server fault needs at least one target role",
                ));
            }
            if !server && !f.targets.is_empty() {
                return Err(invalid(
                    p,
                    &field("targets"),
                    "device faults pick devices; remove `targets`",
                ));
            }
            match (f.kind, f.duration_ms) {
                (FaultKind::DeviceDrop, Some(_)) => {
                    return Err(invalid(
                        p,
                        &field("duration_ms"),
                        "a dropped connection has no duration",
                    ));
                }
                (FaultKind::Malicious, Some(_)) => {
                    return Err(invalid(
                        p,
                        &field("duration_ms"),
                        "an attack is one request: it has no duration",
                    ));
                }
                (FaultKind::DeviceDrop | FaultKind::Malicious, None) => {}
                (_, None) => {
                    return Err(invalid(
                        p,
                        &field("duration_ms"),
                        "missing: how long the fault lasts",
                    ))
                }
                (_, Some(d)) => d.check(p, &field("duration_ms"))?,
            }
            if f.kind == FaultKind::Malicious && f.count.hi > 0 && t.users < 3 {
                return Err(invalid(
                    p,
                    &field("kind"),
                    format!(
                        "a compromised phone attacks the chats of two other users: topology.users must be at least 3, is {}",
                        t.users
                    ),
                ));
            }
            if server && f.count.hi > 0 && self.hosts_of(&f.targets) == 0 {
                return Err(invalid(
                    p,
                    &field("targets"),
                    format!(
                        "no host of this topology has these roles (replicas = {}): nothing to strike",
                        t.replicas
                    ),
                ));
            }
            if matches!(f.kind, FaultKind::Partition | FaultKind::PartitionOneway)
                && self.hosts_of(&f.targets) < 2
            {
                return Err(invalid(
                    p,
                    &field("targets"),
                    "a partition needs at least two hosts among its target roles",
                ));
            }
        }
        Ok(())
    }

    fn validate_event(&self, i: usize, e: &ScheduledEvent) -> Result<(), ScenarioError> {
        let p = self.path.as_path();
        let field = |name: &str| format!("event[{i}].{name}");
        let t = &self.topology;
        let user_ok = |u: Option<u32>, name: &str| match u {
            Some(u) if u < t.users => Ok(()),
            Some(u) => Err(invalid(
                p,
                &field(name),
                format!("user {u} does not exist (users = {})", t.users),
            )),
            None => Err(invalid(
                p,
                &field(name),
                format!("missing: `{}` needs it", action_name(e.action)),
            )),
        };
        let host_ok = |h: &str, name: &str| {
            parse_host(h, t).map(|_| ()).ok_or_else(|| {
                invalid(
                    p,
                    &field(name),
                    format!("`{h}` is not a host of this topology"),
                )
            })
        };
        if e.device.is_some_and(|d| d >= t.devices_per_user) {
            return Err(invalid(
                p,
                &field("device"),
                format!(
                    "device index must be below topology.devices_per_user ({})",
                    t.devices_per_user
                ),
            ));
        }
        match e.action {
            EventAction::Send => {
                user_ok(e.user, "user")?;
                match (e.to, e.group) {
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            p,
                            &field("group"),
                            "a send goes `to` a user or to a `group`, not both",
                        ))
                    }
                    (None, Some(_)) => {}
                    _ => {
                        user_ok(e.to, "to")?;
                        if e.user == e.to {
                            return Err(invalid(
                                p,
                                &field("to"),
                                "a user cannot message themselves",
                            ));
                        }
                    }
                }
                if e.text.is_none() {
                    return Err(invalid(p, &field("text"), "missing: what is sent"));
                }
            }
            EventAction::CreateGroup | EventAction::AddMember | EventAction::RemoveMember => {
                user_ok(e.user, "user")?;
                if e.group.is_none() {
                    return Err(invalid(
                        p,
                        &field("group"),
                        format!("missing: `{}` needs it", action_name(e.action)),
                    ));
                }
                if e.action == EventAction::CreateGroup {
                    for m in &e.members {
                        user_ok(Some(*m), "members")?;
                    }
                } else {
                    user_ok(e.member, "member")?;
                }
            }
            EventAction::Open | EventAction::Close => {
                user_ok(e.user, "user")?;
                match (e.to, e.group) {
                    (Some(_), None) => {
                        user_ok(e.to, "to")?;
                        if e.user == e.to {
                            return Err(invalid(
                                p,
                                &field("to"),
                                "a user has no conversation with themselves",
                            ));
                        }
                    }
                    (None, Some(_)) => {}
                    _ => {
                        return Err(invalid(
                            p,
                            &field("to"),
                            "`open` and `close` name one conversation: `to` a user or a `group`",
                        ))
                    }
                }
            }
            EventAction::Background
            | EventAction::Foreground
            | EventAction::Offline
            | EventAction::Online
            | EventAction::Drop
            | EventAction::Silent
            | EventAction::Unsilent
            | EventAction::Blackhole
            | EventAction::BlackholeEnd => {
                user_ok(e.user, "user")?;
            }
            EventAction::Link => {
                user_ok(e.user, "user")?;
                if e.device.is_none_or(|d| d == 0) {
                    return Err(invalid(
                        p,
                        &field("device"),
                        "`link` adds a companion: name its index (1 or more; 0 is the phone the account was made on)",
                    ));
                }
            }
            EventAction::Attack => {
                user_ok(e.user, "user")?;
                let Some(name) = e.attack.as_deref() else {
                    return Err(invalid(
                        p,
                        &field("attack"),
                        format!("missing: one of {}", ATTACK_NAMES.join(", ")),
                    ));
                };
                match name {
                    "impersonate" | "post-foreign" | "forge-receipt" => {
                        user_ok(e.to, "to")?;
                        user_ok(e.member, "member")?;
                    }
                    "fetch-foreign" if e.group.is_none() => {
                        user_ok(e.to, "to")?;
                        user_ok(e.member, "member")?;
                    }
                    "pull-foreign" | "hijack-group" if e.group.is_none() => {
                        return Err(invalid(
                            p,
                            &field("group"),
                            format!("missing: `{name}` names a group"),
                        ));
                    }
                    "tamper" if e.group.is_none() => {
                        user_ok(e.to, "to")?;
                        if e.to == e.user {
                            return Err(invalid(
                                p,
                                &field("to"),
                                "a user has no chat with themselves",
                            ));
                        }
                    }
                    "fetch-foreign" | "pull-foreign" | "hijack-group" | "reuse-id" | "tamper" => {}
                    other => {
                        return Err(invalid(
                            p,
                            &field("attack"),
                            format!(
                                "unknown attack `{other}`; one of {}",
                                ATTACK_NAMES.join(", ")
                            ),
                        ))
                    }
                }
                if matches!(name, "post-foreign" | "forge-receipt" | "fetch-foreign")
                    && e.group.is_none()
                    && e.to == e.member
                {
                    return Err(invalid(
                        p,
                        &field("member"),
                        "`to` and `member` name the two users of a chat: they must differ",
                    ));
                }
            }
            EventAction::Kill
            | EventAction::Restart
            | EventAction::Clog
            | EventAction::Unclog
            | EventAction::Spike
            | EventAction::SpikeEnd
            | EventAction::DiskSlow
            | EventAction::DiskSlowEnd
            | EventAction::DiskFull
            | EventAction::DiskFullEnd => {
                host_ok(e.host.as_deref().unwrap_or(""), "host")?;
            }
            EventAction::Partition
            | EventAction::HealPartition
            | EventAction::PartitionOneway
            | EventAction::HealPartitionOneway => {
                if e.side_a.is_empty() || e.side_b.is_empty() {
                    return Err(invalid(
                        p,
                        &field("side_a"),
                        "a partition needs hosts on both sides",
                    ));
                }
                for h in &e.side_a {
                    host_ok(h, "side_a")?;
                }
                for h in &e.side_b {
                    host_ok(h, "side_b")?;
                }
            }
        }
        Ok(())
    }
}

/// What a run is expected to hold in memory at its peak, and the field that adds the most.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryEstimate {
    /// Bytes, roughly (a conservative estimate from measured runs, not a bound).
    pub bytes: u64,
    /// The scenario field that contributes the most, and how much.
    pub biggest: (&'static str, u64),
}

/// Bytes a run holds whatever its size (the engine, the binary, buffers).
pub const MEMORY_BASE_BYTES: u64 = 40 << 20;
/// Bytes per device: its machine, keys, connection state on its gateway, its history. Measured
/// (release, no report): smoke with 20,000 users held 367 MB at its peak (18 KB a user); the
/// 100,000-user world 3.55 GiB, which this figure and the others below reproduce.
pub const MEMORY_PER_DEVICE_BYTES: u64 = 28 << 10;
/// Bytes per direct text, over the run: stored copy, inbox entry, frames in flight, and the
/// history's records of it (sent, acked, displayed, receipts). Measured: smoke with 100,000
/// messages held 174 MB, with 20,000 held 58 MB (1.45 KB a message).
pub const MEMORY_PER_MESSAGE_BYTES: u64 = 1_600;
/// Bytes per member a group text reaches. Measured: group-fanout (about 56 members) held 33 KB
/// more per group text (0.6 KB a member).
pub const MEMORY_PER_GROUP_DELIVERY_BYTES: u64 = 700;
/// The frame log a report keeps is bounded ([`crate::record::FRAME_LOG_MAX`] frames).
pub const MEMORY_REPORT_BYTES: u64 = 150 << 20;

impl Scenario {
    /// About how much memory one run of this scenario takes at its peak (`report`: with the
    /// frame log a report needs). A run that asks for more than the machine has would grow
    /// until the OS kills it, minutes in; the command line refuses it before it starts.
    pub fn memory_estimate(&self, report: bool) -> MemoryEstimate {
        let t = &self.topology;
        let w = &self.workload;
        let devices = u64::from(t.users) * u64::from(t.devices_per_user.max(1));
        let mut parts: Vec<(&'static str, u64)> = vec![
            ("topology.users", devices * MEMORY_PER_DEVICE_BYTES),
            (
                "workload.messages",
                u64::from(w.messages) * MEMORY_PER_MESSAGE_BYTES,
            ),
        ];
        if let Some(g) = &w.groups {
            let members = g.size.hi.min(u64::from(t.users)).max(2);
            let per_text =
                MEMORY_PER_MESSAGE_BYTES + (members - 1) * MEMORY_PER_GROUP_DELIVERY_BYTES;
            parts.push(("workload.groups.messages", u64::from(g.messages) * per_text));
            // A group's creation is a membership entry every member is told of.
            parts.push(("workload.groups.count", u64::from(g.count) * per_text));
        }
        let fixed = MEMORY_BASE_BYTES + if report { MEMORY_REPORT_BYTES } else { 0 };
        let biggest = parts
            .iter()
            .copied()
            .max_by_key(|(_, b)| *b)
            .expect("at least the users and messages");
        MemoryEstimate {
            bytes: fixed + parts.iter().map(|(_, b)| b).sum::<u64>(),
            biggest,
        }
    }
}
