//! Failed authentication attempts per client address: after `limit` wrong credentials
//! within `window`, every attempt from that address is refused (429) until the window
//! ends, right credentials included, so guessing gains nothing from trying faster.
//!
//! Rate-limiting crates count every request and offer no look without consuming; a
//! lockout needs exactly that look, and it fits in a small map.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Addresses tracked before expired entries are pruned.
const PRUNE_AT: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Entry {
    count: u32,
    since: Instant,
}

/// The failure counters.
#[derive(Debug)]
pub struct Failures {
    limit: u32,
    window: Duration,
    by_addr: Mutex<HashMap<IpAddr, Entry>>,
}

impl Failures {
    /// At most `limit` failures per `window` per address.
    pub fn new(limit: u32, window: Duration) -> Failures {
        Failures { limit, window, by_addr: Mutex::default() }
    }

    /// How long `addr` stays locked out, if it is.
    pub fn locked(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let by_addr = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        let entry = by_addr.get(&addr)?;
        let ends = entry.since + self.window;
        (entry.count >= self.limit && ends > now).then(|| ends - now)
    }

    /// Counts a failure from `addr`; returns the lockout it caused, if any.
    pub fn record(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let mut by_addr = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        if by_addr.len() >= PRUNE_AT {
            let window = self.window;
            by_addr.retain(|_, e| e.since + window > now);
        }
        let entry = by_addr.entry(addr).or_insert(Entry { count: 0, since: now });
        if entry.since + self.window <= now {
            *entry = Entry { count: 0, since: now };
        }
        entry.count += 1;
        let ends = entry.since + self.window;
        (entry.count >= self.limit).then(|| ends - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_the_limit_until_the_window_ends() {
        let f = Failures::new(3, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t0 = Instant::now();
        assert_eq!(f.record(a, t0), None);
        assert_eq!(f.record(a, t0), None);
        assert_eq!(f.locked(a, t0), None);
        assert_eq!(f.record(a, t0 + Duration::from_secs(10)), Some(Duration::from_secs(50)));
        assert_eq!(f.locked(a, t0 + Duration::from_secs(20)), Some(Duration::from_secs(40)));
        assert_eq!(f.locked(b, t0), None, "other addresses are not affected");
        assert_eq!(f.locked(a, t0 + Duration::from_secs(60)), None, "the window ended");
        assert_eq!(f.record(a, t0 + Duration::from_secs(61)), None, "a new window");
    }
}
