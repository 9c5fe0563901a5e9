//! The session service's table on Redis, as the design has it (`--sessions redis://…`): where
//! each device is connected, and each user's last seen, in two hashes per deployment. The
//! session machine still decides every change; Redis keeps them, and a restarted server reads
//! them back.
//!
//! Every change is a Lua script, so each is atomic on the Redis side and the epoch fence holds
//! there too, not only in the machine: an entry is replaced only by one with an epoch at least as
//! new, and cleared only while it still has the epoch being cleared (a compare-and-delete: a late
//! disconnect must not erase a newer connection, whichever process sends it). A last seen only
//! moves forward.
//!
//! Durability is Redis's own (its `appendonly`/`appendfsync` settings): the session table is
//! soft state that connections rebuild as they register, so the server does not wait for an
//! fsync here as it does for storage.

use chatsim_system::durable::Write;
use chatsim_system::proto::{DeviceId, Millis, UserId};
use chatsim_system::session::SessionChange;
use redis::{Commands, Script};
use std::collections::BTreeMap;
use thiserror::Error;

/// Set a device's entry unless the stored one has a newer epoch. ARGV: field, epoch, value.
const SET_IF_NOT_OLDER: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local e = tonumber(string.match(cur, '^%d+:(%d+):'))
  if e and e > tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
";

/// Clear a device's entry only while it has this epoch. ARGV: field, epoch.
const DELETE_IF_EPOCH: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and tonumber(string.match(cur, '^%d+:(%d+):')) == tonumber(ARGV[2]) then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
";

/// Raise a user's last seen, never lower it. ARGV: field, time.
const RAISE: &str = r"
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return 1 end
return 0
";

/// Why Redis cannot hold the sessions.
#[derive(Debug, Error)]
pub enum SessionsError {
    /// Redis cannot be reached or refused a command.
    #[error("--sessions {url}: {reason}")]
    Redis {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
    /// A stored entry cannot be read back.
    #[error("--sessions {url}: key {key}, field {field}: {reason}")]
    Corrupt {
        /// Where.
        url: String,
        /// Which hash.
        key: String,
        /// Which field.
        field: String,
        /// Why.
        reason: String,
    },
}

/// The session table on Redis.
pub struct RedisSessions {
    conn: redis::Connection,
    url: String,
    entries_key: String,
    seen_key: String,
    /// What Redis holds for each device, as this process last wrote or read it: a clear
    /// carries no epoch, so the one it clears is taken from here.
    mirror: BTreeMap<DeviceId, u64>,
    set: Script,
    delete: Script,
    raise: Script,
}

fn field(d: DeviceId) -> String {
    format!("u{}.d{}", d.user.0, d.index)
}

fn parse_field(f: &str) -> Option<DeviceId> {
    let (u, d) = f.strip_prefix('u')?.split_once(".d")?;
    Some(DeviceId {
        user: UserId(u.parse().ok()?),
        index: d.parse().ok()?,
    })
}

fn parse_entry(v: &str) -> Option<(u16, u64, Millis)> {
    let mut it = v.split(':').map(str::parse::<u64>);
    let (g, e, at) = (it.next()?.ok()?, it.next()?.ok()?, it.next()?.ok()?);
    Some((u16::try_from(g).ok()?, e, at))
}

impl RedisSessions {
    /// Connect to `url` for the deployment named `deployment`, and hand what it holds to
    /// `replay` as session writes.
    pub fn open(
        url: &str,
        deployment: &str,
        mut replay: impl FnMut(Write),
    ) -> Result<RedisSessions, SessionsError> {
        let err = |e: redis::RedisError| SessionsError::Redis {
            url: url.to_string(),
            reason: e.to_string(),
        };
        let client = redis::Client::open(url).map_err(err)?;
        let mut conn = client.get_connection().map_err(err)?;
        let base = format!("chatsim:{{{deployment}}}");
        let entries_key = format!("{base}:sessions");
        let seen_key = format!("{base}:last_seen");
        let entries: BTreeMap<String, String> = conn.hgetall(&entries_key).map_err(err)?;
        let seen: BTreeMap<String, String> = conn.hgetall(&seen_key).map_err(err)?;
        let corrupt = |key: &str, f: &str, reason: &str| SessionsError::Corrupt {
            url: url.to_string(),
            key: key.to_string(),
            field: f.to_string(),
            reason: reason.to_string(),
        };
        let mut mirror = BTreeMap::new();
        for (f, v) in &entries {
            let device = parse_field(f).ok_or_else(|| corrupt(&entries_key, f, "not a device"))?;
            let entry =
                parse_entry(v).ok_or_else(|| corrupt(&entries_key, f, "not gateway:epoch:at"))?;
            mirror.insert(device, entry.1);
            replay(Write::Session(SessionChange::Entry {
                device,
                entry: Some(entry),
            }));
        }
        for (f, v) in &seen {
            let user = f
                .strip_prefix('u')
                .and_then(|u| u.parse().ok())
                .map(UserId)
                .ok_or_else(|| corrupt(&seen_key, f, "not a user"))?;
            let at = v.parse().map_err(|_| corrupt(&seen_key, f, "not a time"))?;
            replay(Write::Session(SessionChange::LastSeen { user, at }));
        }
        Ok(RedisSessions {
            conn,
            url: url.to_string(),
            entries_key,
            seen_key,
            mirror,
            set: Script::new(SET_IF_NOT_OLDER),
            delete: Script::new(DELETE_IF_EPOCH),
            raise: Script::new(RAISE),
        })
    }

    /// Keep one change the session machine made. Returns whether Redis took it (false: its
    /// fence refused it, as a newer entry was there).
    pub fn apply(&mut self, change: &SessionChange) -> Result<bool, SessionsError> {
        let err = |e: redis::RedisError| SessionsError::Redis {
            url: self.url.clone(),
            reason: e.to_string(),
        };
        let done: i64 = match change {
            SessionChange::Entry {
                device,
                entry: Some((g, e, at)),
            } => {
                let took = self
                    .set
                    .key(&self.entries_key)
                    .arg(field(*device))
                    .arg(*e)
                    .arg(format!("{g}:{e}:{at}"))
                    .invoke(&mut self.conn)
                    .map_err(err)?;
                if took == 1 {
                    self.mirror.insert(*device, *e);
                }
                took
            }
            SessionChange::Entry {
                device,
                entry: None,
            } => match self.mirror.get(device).copied() {
                Some(e) => {
                    let took = self.clear_if(*device, e)?;
                    self.mirror.remove(device);
                    i64::from(took)
                }
                None => 0,
            },
            SessionChange::LastSeen { user, at } => self
                .raise
                .key(&self.seen_key)
                .arg(format!("u{}", user.0))
                .arg(*at)
                .invoke(&mut self.conn)
                .map_err(err)?,
        };
        Ok(done == 1)
    }

    /// Clear `device`'s entry only while it has `epoch`: true if it did.
    pub fn clear_if(&mut self, device: DeviceId, epoch: u64) -> Result<bool, SessionsError> {
        let done: i64 = self
            .delete
            .key(&self.entries_key)
            .arg(field(device))
            .arg(epoch)
            .invoke(&mut self.conn)
            .map_err(|e| SessionsError::Redis {
                url: self.url.clone(),
                reason: e.to_string(),
            })?;
        Ok(done == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_read_back_and_bad_ones_do_not() {
        let d = DeviceId {
            user: UserId(12),
            index: 1,
        };
        assert_eq!(parse_field(&field(d)), Some(d));
        assert_eq!(parse_field("u12"), None);
        assert_eq!(
            parse_entry("1:1796506720831:17"),
            Some((1, 1_796_506_720_831, 17))
        );
        assert_eq!(parse_entry("1:2"), None);
        assert_eq!(parse_entry("70000:2:3"), None, "a gateway number past u16");
    }
}
