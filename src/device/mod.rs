//! The synthetic device population: which registration IDs exist, in which order they register,
//! and their keys ([`keys`]).
//!
//! The order is a seeded shuffle of all classes' devices (same seed → same order on every
//! machine: ChaCha8 is portable), so a run is never class-by-class. Request `i` uses device
//! `i mod len`: a run longer than the population cycles through it again. The population stores
//! only (class, n) pairs; IDs are rendered on demand.

pub mod keys;
pub mod template;

use rand::seq::SliceRandom;
use rand::SeedableRng;

/// One device: its class index and its `{n}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    /// Index into the scenario's classes.
    pub class: u32,
    /// The number substituted into the class template.
    pub n: u64,
}

/// The shuffled population.
#[derive(Debug, Clone)]
pub struct Population {
    order: Vec<Device>,
}

impl Population {
    /// Builds the population from inclusive `n` ranges, one per class.
    pub fn new(ranges: &[(u64, u64)], seed: u64) -> Self {
        let mut order = Vec::with_capacity(ranges.iter().map(|(a, b)| (b - a + 1) as usize).sum());
        for (class, (a, b)) in ranges.iter().enumerate() {
            order.extend((*a..=*b).map(|n| Device {
                class: class as u32,
                n,
            }));
        }
        Self::from_devices(order, seed)
    }

    /// A population of exactly these devices, shuffled by `seed`.
    pub fn from_devices(mut order: Vec<Device>, seed: u64) -> Self {
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        Self { order }
    }

    /// Shard `i` of `n` (0-based): every n-th device of the shuffled order, starting at `i`.
    /// Shards are disjoint, cover the population together, and keep its class mix.
    pub fn shard(&self, i: u32, n: u32) -> Self {
        Self {
            order: self
                .order
                .iter()
                .enumerate()
                .filter(|(k, _)| *k as u64 % u64::from(n) == u64::from(i))
                .map(|(_, d)| *d)
                .collect(),
        }
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when there are no devices.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The device used by request `i` (cycling).
    pub fn device(&self, i: u64) -> Device {
        self.order[(i % self.order.len() as u64) as usize]
    }

    /// Every device in registration order.
    pub fn iter(&self) -> impl Iterator<Item = Device> + '_ {
        self.order.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_interleaved_and_complete() {
        let a = Population::new(&[(1, 100), (1, 100)], 42);
        let b = Population::new(&[(1, 100), (1, 100)], 42);
        let c = Population::new(&[(1, 100), (1, 100)], 43);
        assert_eq!(a.order, b.order);
        assert_ne!(a.order, c.order);
        assert_eq!(a.len(), 200);
        // Interleaved: the first 20 are not all one class.
        let first: Vec<u32> = a.iter().take(20).map(|d| d.class).collect();
        assert!(first.contains(&0) && first.contains(&1), "{first:?}");
        let mut all: Vec<(u32, u64)> = a.iter().map(|d| (d.class, d.n)).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 200);
        assert_eq!(a.device(200), a.device(0));
    }
}
