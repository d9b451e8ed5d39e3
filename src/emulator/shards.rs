//! A string-keyed map kept as [`SHARDS`] sub-maps, so that growing it never rehashes more than a
//! small part of it at once: the emulator's registrations, operations and hub device lists grow
//! by one entry per registration, and a single `HashMap` doubling at 229,376 entries stalled every
//! registration behind the emulator's lock for 150 ms (schedule-lag spikes at 2.9, 5.7, 11.5, 23
//! and 46 s of `scenarios/bench-mqtt.toml`, one per doubling). Must not: lock (its owner does), or
//! promise any iteration order (callers sort what they show).
//!
//! Hand-written (a few lines over std's `HashMap`): a sharded concurrent map such as dashmap
//! would split the emulator's one lock, under which a registration's record and its operation
//! change together.

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How many sub-maps (a power of two): a doubling rehashes 1/64 of the entries.
const SHARDS: usize = 64;

/// The map.
#[derive(Clone)]
pub struct Sharded<V> {
    /// Picks a key's sub-map. Seeded apart from the sub-maps' own hashers, whose top bits would
    /// otherwise be the same for every key in a sub-map (hashbrown tags entries with them).
    pick: RandomState,
    shards: Box<[HashMap<String, V, RandomState>]>,
}

impl<V> Default for Sharded<V> {
    fn default() -> Self {
        Self {
            pick: RandomState::default(),
            shards: (0..SHARDS).map(|_| HashMap::default()).collect(),
        }
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for Sharded<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V> Sharded<V> {
    fn index(&self, key: &str) -> usize {
        (self.pick.hash_one(key) >> (64 - SHARDS.trailing_zeros())) as usize
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.shards[self.index(key)].get(key)
    }

    /// The value for `key`, to change.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let i = self.index(key);
        self.shards[i].get_mut(key)
    }

    /// Sets `key`'s value; the one it replaces.
    pub fn insert(&mut self, key: String, value: V) -> Option<V> {
        let i = self.index(&key);
        self.shards[i].insert(key, value)
    }

    /// `key`'s entry, to fill or change in place.
    pub fn entry(&mut self, key: String) -> std::collections::hash_map::Entry<'_, String, V> {
        let i = self.index(&key);
        self.shards[i].entry(key)
    }

    /// Takes `key` out.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let i = self.index(key);
        self.shards[i].remove(key)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.shards.iter().flatten()
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }
}

impl<V> FromIterator<(String, V)> for Sharded<V> {
    fn from_iter<I: IntoIterator<Item = (String, V)>>(iter: I) -> Self {
        let mut m = Self::default();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

/// Written as one JSON object, as a `HashMap` is.
impl<V: Serialize> Serialize for Sharded<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Sharded<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(HashMap::<String, V>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_one_map_and_spreads_its_entries() {
        let mut m = Sharded::default();
        for n in 0..10_000u32 {
            assert_eq!(m.insert(format!("device-{n}"), n), None);
        }
        assert_eq!(m.insert("device-7".into(), 70), Some(7));
        assert_eq!(
            (m.len(), m.get("device-7"), m.get("nope")),
            (10_000, Some(&70), None)
        );
        *m.get_mut("device-8").unwrap() += 1;
        assert_eq!(m.remove("device-8"), Some(9));
        assert_eq!((m.len(), m.remove("device-8")), (9_999, None));
        // Every sub-map has a share: none holds more than twice the mean.
        let most = m.shards.iter().map(HashMap::len).max().unwrap();
        assert!(most < 2 * 10_000 / SHARDS, "a sub-map holds {most}");
        let json = serde_json::to_string(&m).unwrap();
        let back: Sharded<u32> = serde_json::from_str(&json).unwrap();
        let mut a: Vec<_> = m.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let mut b: Vec<_> = back.iter().map(|(k, v)| (k.clone(), *v)).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }
}
