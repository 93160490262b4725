//! NVLink sets as bitmasks over a small pool of one node's GPUs: the
//! links and connectivity of a candidate set without allocating, for the
//! exhaustive search of the best set (`hw::best_set` tries every
//! `k`-subset of up to 16 GPUs, so this is on the placement hot path).

use crate::cluster::NodeState;

/// Largest pool handled (the exhaustive search stops at 16 GPUs).
pub(crate) const MAX_POOL: usize = 16;

/// The links among a pool of GPUs, by position in the pool.
pub(crate) struct Links {
    /// `adj[i]`: the positions GPU `i` lists an NVLink to.
    adj: [u32; MAX_POOL],
    /// `w[i][j]`: how many links GPU `i` lists towards GPU `j`.
    w: [[u32; MAX_POOL]; MAX_POOL],
}

impl Links {
    /// The links among `pool` (GPU indexes on `node`, at most
    /// [`MAX_POOL`], no repeats), as each GPU's own list states them.
    pub(crate) fn new(node: &NodeState, pool: &[u32]) -> Links {
        debug_assert!(pool.len() <= MAX_POOL);
        let mut l = Links {
            adj: [0; MAX_POOL],
            w: [[0; MAX_POOL]; MAX_POOL],
        };
        for (i, a) in pool.iter().enumerate().take(MAX_POOL) {
            let Some(g) = node.gpus.iter().find(|g| g.index == *a) else {
                continue;
            };
            for (p, n) in &g.nvlinks {
                if let Some(j) = pool.iter().take(MAX_POOL).position(|x| x == p) {
                    l.adj[i] |= 1 << j;
                    l.w[i][j] += n;
                }
            }
        }
        l
    }

    /// Whether every position in `set` is reached by NVLink from its
    /// lowest one (an empty or single-GPU set is).
    pub(crate) fn connected(&self, set: u32) -> bool {
        set == 0 || self.reach(set.trailing_zeros() as usize, set) == set
    }

    /// Whether `k` of the first `n` positions are connected from their
    /// lowest one (what the best-set search with connectivity looks for):
    /// true when, for some `s`, the positions reached from `s` through
    /// positions at or after `s` are at least `k` (the first `k` of them in
    /// the order they are reached form such a set).
    pub(crate) fn has_connected(&self, n: usize, k: usize) -> bool {
        let n = n.min(MAX_POOL);
        if k <= 1 {
            return n >= k;
        }
        (0..n.saturating_sub(k - 1)).any(|s| self.reach_after(s, n).count_ones() as usize >= k)
    }

    /// The most of the first `n` positions connected from their lowest
    /// one: `has_connected(n, k)` holds exactly for `k` up to this.
    pub(crate) fn most_connected(&self, n: usize) -> usize {
        let n = n.min(MAX_POOL);
        (0..n)
            .map(|s| self.reach_after(s, n).count_ones() as usize)
            .max()
            .unwrap_or(0)
    }

    /// The positions reached from `start` through positions in `allowed`.
    fn reach(&self, start: usize, allowed: u32) -> u32 {
        let mut seen = 1u32 << start;
        let mut frontier = seen;
        while frontier != 0 {
            let i = frontier.trailing_zeros() as usize;
            frontier &= frontier - 1;
            let new = self.adj[i] & allowed & !seen;
            seen |= new;
            frontier |= new;
        }
        seen
    }

    /// The positions reached from `s` through positions in `s..n`.
    fn reach_after(&self, s: usize, n: usize) -> u32 {
        self.reach(s, ((1u64 << n) - 1) as u32 & !((1u32 << s) - 1))
    }

    /// Links within `set`: for each GPU, those it lists towards GPUs at
    /// later positions of the set.
    pub(crate) fn within(&self, set: u32) -> u32 {
        let mut total = 0;
        let mut rest = set;
        while rest != 0 {
            let i = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            let mut later = rest;
            while later != 0 {
                let j = later.trailing_zeros() as usize;
                later &= later - 1;
                total += self.w[i][j];
            }
        }
        total
    }
}

/// The pool's GPU indexes at the positions of `set`, in pool order.
pub(crate) fn members(pool: &[u32], set: u32) -> Vec<u32> {
    pool.iter()
        .enumerate()
        .filter(|(i, _)| set & (1 << i) != 0)
        .map(|(_, g)| *g)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::GpuState;
    use crate::hw::{connected, links_within};

    /// Random nodes and sets: the masks agree with the slice functions.
    #[test]
    fn agrees_with_the_set_functions() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..500 {
            let count = 1 + next(12) as u32;
            let mut gpus = Vec::new();
            for i in 0..count {
                let mut nvlinks = Vec::new();
                for p in 0..count {
                    if p != i && next(3) == 0 {
                        nvlinks.push((p, 1 + next(4) as u32));
                    }
                }
                gpus.push(GpuState {
                    index: i,
                    nvlinks,
                    ..Default::default()
                });
            }
            let node = NodeState {
                gpus,
                ..Default::default()
            };
            let pool: Vec<u32> = (0..count).filter(|_| next(4) != 0).collect();
            let links = Links::new(&node, &pool);
            for _ in 0..20 {
                let mask = next(1 << pool.len()) as u32;
                let set = members(&pool, mask);
                assert_eq!(links.connected(mask), connected(&node, &set), "{set:?}");
                assert_eq!(links.within(mask), links_within(&node, &set), "{set:?}");
            }
            // Some k-subset is connected exactly when the search finds one.
            for k in 1..=pool.len() {
                let exhaustive = (0u32..1 << pool.len())
                    .filter(|m| m.count_ones() as usize == k)
                    .any(|m| links.connected(m));
                assert_eq!(
                    links.has_connected(pool.len(), k),
                    exhaustive,
                    "{pool:?} k={k}"
                );
            }
        }
    }
}
