//! A direct-mapped cache of translated rules, keyed by (file, address).

use crate::unwinder::Found;

const SLOTS: usize = 4093; // prime, as framehop's 509-slot cache but larger

/// Hit and miss counts, for `debug!` reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that needed the CFI.
    pub misses: u64,
}

#[derive(Clone, Copy)]
struct Slot {
    file: usize,
    svma: u64,
    rule: Found,
}

pub(crate) struct RuleCache {
    slots: Vec<Option<Slot>>,
    pub(crate) stats: CacheStats,
}

impl RuleCache {
    pub(crate) fn new() -> Self {
        RuleCache {
            slots: vec![None; SLOTS],
            stats: CacheStats::default(),
        }
    }

    fn index(file: usize, svma: u64) -> usize {
        ((svma ^ (file as u64).rotate_left(40)) % SLOTS as u64) as usize
    }

    /// `Some(found)` on a hit.
    pub(crate) fn get(&mut self, file: usize, svma: u64) -> Option<Found> {
        match self.slots[Self::index(file, svma)] {
            Some(s) if s.file == file && s.svma == svma => {
                self.stats.hits += 1;
                Some(s.rule)
            }
            _ => {
                self.stats.misses += 1;
                None
            }
        }
    }

    pub(crate) fn insert(&mut self, file: usize, svma: u64, rule: Found) {
        self.slots[Self::index(file, svma)] = Some(Slot { file, svma, rule });
    }
}
