//! Record versions: a hybrid logical clock value plus the id of the node that issued it
//! (cluster contract §6).
//!
//! The clock value packs wall-clock milliseconds since the Unix epoch in its high 48 bits and a
//! logical counter in its low 16, so one integer comparison orders two values by time, then by
//! counter. A node's clock never goes back: each value it issues is greater than every value it
//! issued or observed before, even when the wall clock steps back or thousands of changes share a
//! millisecond (the counter then carries into the millisecond bits, which only moves the clock
//! ahead of real time for as long as the burst lasts).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// How far ahead of the wall clock an observed version may be and still be followed.
pub const MAX_OBSERVED_LEAD: std::time::Duration = std::time::Duration::from_secs(3600);

/// Bits of the logical counter below the milliseconds.
const COUNTER_BITS: u32 = 16;

/// A record's version. Versions compare by clock value, then by node id, so two changes issued
/// by different nodes are never equal, and two issued by one node never share a clock value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Wall-clock milliseconds << 16 | logical counter.
    pub clock: u64,
    /// The issuing node's member id (a random 64-bit number, written as 16 hex digits; their
    /// byte-wise order is this integer order).
    pub node: u64,
}

impl Version {
    /// The version below every issued one (records that have none yet).
    pub const ZERO: Version = Version { clock: 0, node: 0 };

    /// Wall-clock milliseconds of the clock value.
    pub fn millis(self) -> u64 {
        self.clock >> COUNTER_BITS
    }

    /// `clock.node` in hex, as the line protocol and logs write it.
    pub fn encode(self) -> String {
        format!("{:x}.{:016x}", self.clock, self.node)
    }

    /// The inverse of [`Version::encode`]; `None` for anything else.
    pub fn decode(text: &str) -> Option<Version> {
        let (clock, node) = text.split_once('.')?;
        if clock.is_empty() || clock.len() > 16 || node.len() != 16 {
            return None;
        }
        let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(clock) || !hex(node) {
            return None;
        }
        Some(Version {
            clock: u64::from_str_radix(clock, 16).ok()?,
            node: u64::from_str_radix(node, 16).ok()?,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// One node's hybrid logical clock. Lock-free: issuing a version is one compare-and-swap loop.
pub struct HybridClock {
    node: u64,
    last: AtomicU64,
}

impl HybridClock {
    pub fn new(node: u64) -> HybridClock {
        HybridClock {
            node,
            last: AtomicU64::new(0),
        }
    }

    /// The member id this clock stamps its versions with.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// A new version, greater than every version issued or observed so far; `wall_millis` is the
    /// wall clock now.
    pub fn issue(&self, wall_millis: u64) -> Version {
        let physical = wall_millis.min(u64::MAX >> COUNTER_BITS) << COUNTER_BITS;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = physical.max(last.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Version {
                        clock: next,
                        node: self.node,
                    }
                }
                Err(current) => last = current,
            }
        }
    }

    /// Takes note of a version made elsewhere, so that every later issued one is greater; at
    /// wall-clock milliseconds `wall_millis` now. A version more than [`MAX_OBSERVED_LEAD`] ahead
    /// of the wall clock is not followed (a peer with a broken clock must not pin this node's
    /// clock at the end of time); it still orders as what it is.
    pub fn observe(&self, version: Version, wall_millis: u64) {
        let lead_millis = MAX_OBSERVED_LEAD.as_millis() as u64;
        if version.millis() > wall_millis.saturating_add(lead_millis) {
            return;
        }
        self.last.fetch_max(version.clock, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_versions_grow_even_when_the_wall_clock_steps_back() {
        let clock = HybridClock::new(7);
        let a = clock.issue(1_000);
        let b = clock.issue(1_000);
        let c = clock.issue(900);
        let d = clock.issue(2_000);
        assert!(a < b && b < c && c < d);
        assert_eq!(a.millis(), 1_000);
        assert_eq!(
            c.millis(),
            1_000,
            "a step back keeps the clock where it was"
        );
        assert_eq!(d.millis(), 2_000);
    }

    #[test]
    fn observed_versions_are_overtaken() {
        let clock = HybridClock::new(1);
        let remote = Version {
            clock: 5_000 << COUNTER_BITS | 3,
            node: 9,
        };
        clock.observe(remote, 5_000);
        let next = clock.issue(10);
        assert!(next > remote);
        assert_eq!(next.clock, remote.clock + 1);
        let broken = Version {
            clock: u64::MAX,
            node: 9,
        };
        clock.observe(broken, 5_000);
        assert!(
            clock.issue(6_000).millis() == 6_000,
            "a far-future clock is not followed"
        );
    }

    #[test]
    fn versions_order_by_clock_then_node() {
        let low = Version { clock: 5, node: 9 };
        let high = Version { clock: 6, node: 1 };
        let tie = Version { clock: 6, node: 2 };
        assert!(low < high && high < tie);
    }

    #[test]
    fn encoding_round_trips_and_refuses_garbage() {
        let v = Version {
            clock: 0x1234_5678_9abc,
            node: 0x1f0c_6e2a_9b3d_4c57,
        };
        assert_eq!(v.encode(), "123456789abc.1f0c6e2a9b3d4c57");
        assert_eq!(Version::decode(&v.encode()), Some(v));
        for bad in [
            "",
            ".",
            "1.",
            "x.1f0c6e2a9b3d4c57",
            "1.1f0c6e2a9b3d4c5",
            "1.1f0c6e2a9b3d4c57a",
            "+1.1f0c6e2a9b3d4c57",
            "11111111111111111.1f0c6e2a9b3d4c57",
        ] {
            assert_eq!(Version::decode(bad), None, "{bad}");
        }
    }
}
