//! Per-source budgets: token buckets keyed by IP address (or any key), with a
//! bounded number of keys, so that what one source can make the node spend does
//! not reset when it changes its peer id or miner key.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Instant;

/// A budget of `burst` units that refills at `per_sec` units per second.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    /// Units regained per second.
    pub per_sec: f64,
    /// Most units that can be spent at once.
    pub burst: f64,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets for up to `max_keys` keys. When full, the bucket that has been
/// idle longest is forgotten (it was refilled anyway), so memory stays bounded
/// whatever the number of sources.
#[derive(Debug)]
pub struct Buckets<K> {
    rate: Rate,
    max_keys: usize,
    map: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// Empty buckets with the same `rate` for every key.
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        Buckets { rate, max_keys: max_keys.max(1), map: HashMap::new() }
    }

    /// Takes `cost` units from `key`'s bucket if it holds them.
    pub fn try_take(&mut self, key: &K, cost: f64, now: Instant) -> bool {
        if !self.map.contains_key(key) && self.map.len() >= self.max_keys {
            if let Some(oldest) = self.map.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| k.clone()) {
                self.map.remove(&oldest);
            }
        }
        let rate = self.rate;
        let b = self.map.entry(key.clone()).or_insert(Bucket { tokens: rate.burst, at: now });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate.per_sec).min(rate.burst);
        b.at = now;
        if b.tokens >= cost {
            b.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// Number of keys tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// The unit of IP accounting: the address itself for IPv4 (each loopback address
/// counts apart, which the tests use), the /64 for IPv6 (one host usually owns a
/// whole /64, so single addresses would be free to change).
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// One peer's budget for work it can start in the node: a token bucket (rate)
/// and a cap on how many of its items are being processed at once (queue
/// length). Gossip uses one per peer, so a fast or hostile peer runs out of its
/// own budget and never of the others'.
#[derive(Clone, Copy, Debug)]
pub struct PeerBudget {
    rate: Rate,
    max_in_flight: usize,
    bucket: Bucket,
    in_flight: usize,
}

impl PeerBudget {
    /// A full budget at `now`.
    pub fn new(rate: Rate, max_in_flight: usize, now: Instant) -> Self {
        PeerBudget { rate, max_in_flight, bucket: Bucket { tokens: rate.burst, at: now }, in_flight: 0 }
    }

    /// Starts one item if a token and a slot are free (then call
    /// [`Self::finish`] when it is done).
    pub fn try_start(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.bucket.at).as_secs_f64();
        self.bucket.tokens = (self.bucket.tokens + elapsed * self.rate.per_sec).min(self.rate.burst);
        self.bucket.at = now;
        if self.in_flight >= self.max_in_flight || self.bucket.tokens < 1.0 {
            return false;
        }
        self.bucket.tokens -= 1.0;
        self.in_flight += 1;
        true
    }

    /// One item started by [`Self::try_start`] is done.
    pub fn finish(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Items being processed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

/// Counts open connections per IP and refuses beyond `per_ip` or `total`.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    per_ip: usize,
    total: usize,
    open: HashMap<IpAddr, usize>,
    all: usize,
}

impl ConnectionCounts {
    /// Limits of `per_ip` connections from one address and `total` in all.
    pub fn new(per_ip: usize, total: usize) -> Self {
        ConnectionCounts { per_ip, total, open: HashMap::new(), all: 0 }
    }

    /// Counts a new connection from `ip` if the limits allow it.
    pub fn try_open(&mut self, ip: IpAddr) -> bool {
        let key = ip_key(ip);
        let n = self.open.get(&key).copied().unwrap_or(0);
        if n >= self.per_ip || self.all >= self.total {
            return false;
        }
        self.open.insert(key, n + 1);
        self.all += 1;
        true
    }

    /// A connection from `ip` closed.
    pub fn close(&mut self, ip: IpAddr) {
        let key = ip_key(ip);
        if let Some(n) = self.open.get_mut(&key) {
            *n -= 1;
            self.all = self.all.saturating_sub(1);
            if *n == 0 {
                self.open.remove(&key);
            }
        }
    }

    /// Connections open from `ip`.
    #[cfg(test)]
    fn open_from(&self, ip: IpAddr) -> usize {
        self.open.get(&ip_key(ip)).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A flooding peer runs out of its own budget (rate, then slots) while a
    /// quiet peer's is untouched; finished items free slots, time refills tokens.
    #[test]
    fn peer_budgets_bound_rate_and_in_flight_per_peer() {
        let t0 = Instant::now();
        let rate = Rate { per_sec: 1.0, burst: 4.0 };
        let mut flood = PeerBudget::new(rate, 3, t0);
        let mut quiet = PeerBudget::new(rate, 3, t0);
        // Slots first: 3 at once, the 4th waits although a token is left.
        assert!((0..3).all(|_| flood.try_start(t0)));
        assert!(!flood.try_start(t0));
        assert_eq!(flood.in_flight(), 3);
        flood.finish();
        // One token left of the burst of 4.
        assert!(flood.try_start(t0));
        flood.finish();
        flood.finish();
        // Slots are free, tokens are not.
        assert!(!flood.try_start(t0));
        assert!(!flood.try_start(t0 + Duration::from_millis(500)));
        assert!(flood.try_start(t0 + Duration::from_millis(1_100)));
        // The other peer still has its whole burst.
        assert!((0..3).all(|_| quiet.try_start(t0)));
        // Finishing more than started never underflows.
        let mut idle = PeerBudget::new(rate, 1, t0);
        idle.finish();
        assert_eq!(idle.in_flight(), 0);
        assert!(idle.try_start(t0));
    }

    #[test]
    fn buckets_refill_and_stay_bounded() {
        let mut b = Buckets::new(Rate { per_sec: 2.0, burst: 3.0 }, 4);
        let t0 = Instant::now();
        assert!((0..3).all(|_| b.try_take(&1u32, 1.0, t0)));
        assert!(!b.try_take(&1u32, 1.0, t0), "burst spent");
        assert!(b.try_take(&1u32, 1.0, t0 + Duration::from_millis(600)), "refilled at 2/s");
        for k in 2..100u32 {
            b.try_take(&k, 1.0, t0);
        }
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn connection_counts_per_ip() {
        let mut c = ConnectionCounts::new(2, 3);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        assert!(c.try_open(a) && c.try_open(a));
        assert!(!c.try_open(a), "per-IP limit");
        assert!(c.try_open(b));
        assert!(!c.try_open(b), "total limit");
        c.close(a);
        assert!(c.try_open(b));
        assert_eq!(c.open_from(b), 2);
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(ip_key(v6a), ip_key(v6b), "one /64");
    }
}
