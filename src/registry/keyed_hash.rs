//! The keyed hash of the maps whose keys come from clients (namespaces, instance ids, service
//! names): std's SipHash-1-3 spent about 200 instructions on each lookup of a heartbeat, this
//! about 45 (measured with callgrind on the static binary).
//!
//! Why not SipHash: a hash table needs its keys spread over the buckets even when a client
//! chooses them to collide (HashDoS), not a cryptographic MAC. The construction here is the one of
//! foldhash and aHash's fallback, which hashbrown's own default uses: the input is read eight bytes
//! at a time and each pair of words is mixed by a folded 64 × 64 → 128-bit multiplication with a
//! key drawn at random when the process starts. Without the key a client cannot compute where
//! its keys land, so it cannot aim them at one bucket; the map's own probing and the store's
//! bounds (the namespace's capacity, the id length) hold what chance collisions cost. Should the
//! key ever leak, the worst a client could do is slow the lookups of its own namespace's shard.
//!
//! Not stable across processes, nor meant to be: never persist or send these hashes.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// A `HashMap` with the keyed hash: make one with `KeyedMap::default()`.
pub type KeyedMap<K, V> = HashMap<K, V, KeyedState>;
/// A `HashSet` with the keyed hash: make one with `KeyedSet::default()`.
pub type KeyedSet<K> = HashSet<K, KeyedState>;

/// Builds [`KeyedHasher`]s with the process's random key.
#[derive(Clone, Copy, Debug)]
pub struct KeyedState {
    key: [u64; 2],
}

impl Default for KeyedState {
    fn default() -> Self {
        KeyedState {
            key: *process_key(),
        }
    }
}

/// Drawn once: std's `RandomState` takes its keys from the operating system's random source.
fn process_key() -> &'static [u64; 2] {
    static KEY: OnceLock<[u64; 2]> = OnceLock::new();
    KEY.get_or_init(|| {
        let random = RandomState::new();
        [random.hash_one(0u8), random.hash_one(1u8)]
    })
}

impl BuildHasher for KeyedState {
    type Hasher = KeyedHasher;

    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher {
            state: self.key[0],
            key: self.key[1],
        }
    }
}

/// The keyed hash of `bytes` alone (a `str`'s `Hash` adds a terminator byte, one more mix).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hasher = KeyedState::default().build_hasher();
    hasher.write(bytes);
    hasher.finish()
}

/// The product's high and low halves folded together: every input bit moves many output bits.
fn folded_multiply(x: u64, y: u64) -> u64 {
    let product = u128::from(x) * u128::from(y);
    (product as u64) ^ ((product >> 64) as u64)
}

fn word(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn half_word(bytes: &[u8], at: usize) -> u64 {
    let mut half = [0u8; 4];
    half.copy_from_slice(&bytes[at..at + 4]);
    u64::from(u32::from_le_bytes(half))
}

/// The hasher of [`KeyedState`].
pub struct KeyedHasher {
    state: u64,
    key: u64,
}

impl KeyedHasher {
    fn mix(&mut self, a: u64, b: u64) {
        self.state = folded_multiply(a ^ self.state, b ^ self.key);
    }
}

impl Hasher for KeyedHasher {
    fn write(&mut self, bytes: &[u8]) {
        let len = bytes.len();
        // Two words that together cover every byte (overlapping when shorter than 16), with the
        // length mixed in so that inputs of different lengths never share the pair.
        let length = len as u64;
        if len <= 16 {
            let (a, b) = if len >= 8 {
                (word(bytes, 0), word(bytes, len - 8))
            } else if len >= 4 {
                (half_word(bytes, 0), half_word(bytes, len - 4))
            } else if len > 0 {
                let first_two = u64::from(bytes[0]) | u64::from(bytes[len / 2]) << 8;
                (first_two, u64::from(bytes[len - 1]))
            } else {
                (0, 0)
            };
            self.mix(a, b ^ length.rotate_left(32));
            return;
        }
        let mut at = 0;
        while len - at > 16 {
            self.mix(word(bytes, at), word(bytes, at + 8));
            at += 16;
        }
        self.mix(
            word(bytes, len - 16),
            word(bytes, len - 8) ^ length.rotate_left(32),
        );
    }

    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        // A constant second word: a zero there would zero the product whatever `i` is.
        self.mix(i, 0x9e37_79b9_7f4a_7c15);
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn equal_keys_hash_equal_and_maps_find_them() {
        let state = KeyedState::default();
        assert_eq!(state.hash_one("abc"), KeyedState::default().hash_one("abc"));
        let mut map: KeyedMap<String, usize> = KeyedMap::default();
        for i in 0..1000 {
            map.insert(format!("instance-{i}"), i);
        }
        for i in 0..1000 {
            assert_eq!(map.get(format!("instance-{i}").as_str()), Some(&i));
        }
        assert_eq!(map.get("instance-1000"), None);
    }

    #[test]
    fn every_byte_and_the_length_count() {
        let state = KeyedState::default();
        let mut seen = std::collections::HashSet::new();
        // Every length from 0 to 40, and at each length a change of any one byte.
        for len in 0..=40 {
            let base = vec![b'a'; len];
            assert!(seen.insert(state.hash_one(&base[..])), "length {len}");
            for at in 0..len {
                let mut changed = base.clone();
                changed[at] = b'b';
                assert!(seen.insert(state.hash_one(&changed[..])), "{len} {at}");
            }
        }
        // A prefix padded with zeros is another key.
        assert_ne!(state.hash_one(&b"ab"[..]), state.hash_one(&b"ab\0"[..]));
    }

    #[test]
    fn spreads_sequential_ids_over_buckets() {
        // The low bits pick hashbrown's bucket, the top seven its tag: both must vary.
        let state = KeyedState::default();
        let mut low = [0usize; 64];
        let mut top = std::collections::HashSet::new();
        for i in 0..6400u32 {
            let hash = state.hash_one(format!("{i:016x}").as_str());
            low[(hash & 63) as usize] += 1;
            top.insert(hash >> 57);
        }
        assert!(low.iter().all(|&n| (50..=150).contains(&n)), "{low:?}");
        assert_eq!(top.len(), 128);
    }
}
