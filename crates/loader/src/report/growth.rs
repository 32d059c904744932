//! Growth over time: for each stack, how its outstanding bytes changed from
//! one report to the next and since the first, and the "suspects" — stacks
//! whose bytes grew in most reports and never went back, the shape of a
//! leak (a cache fills once, then stays; a leak keeps growing).

use std::collections::HashMap;

/// A stack in one category (heap or mmap).
pub type Key = (u64, &'static str);

#[derive(Debug, Clone, Copy, Default)]
struct History {
    /// Bytes at the first report (0 for a stack that came later).
    first: u64,
    last: u64,
    /// Reports since it first appeared (that one included).
    reports: u32,
    /// Of those, the reports where its bytes grew (its first appearance
    /// counts: it grew from nothing).
    grew: u32,
    /// ... and where they went down.
    shrank: u32,
    /// Change at the last report.
    since_previous: i64,
}

/// A stack's trend, as of the last report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trend {
    pub since_previous: i64,
    /// Since the first report.
    pub since_start: i64,
    pub reports: u32,
    pub grew: u32,
    pub shrank: u32,
    /// 1 for the strongest suspect, 2 for the next, ...
    pub suspect_rank: Option<u32>,
}

/// Reports a stack must have been in before it is called a suspect.
pub const MIN_REPORTS: u32 = 3;

/// The trends of a process's stacks, report after report.
#[derive(Debug, Default, Clone)]
pub struct Growth {
    history: HashMap<Key, History>,
    ranks: HashMap<Key, u32>,
    /// Reports taken in.
    reports: u32,
}

fn delta(now: u64, before: u64) -> i64 {
    (i128::from(now) - i128::from(before)).clamp(i64::MIN.into(), i64::MAX.into()) as i64
}

impl Growth {
    /// Takes in a report: the outstanding bytes of each stack (stacks not
    /// named hold nothing any more).
    pub fn update(&mut self, totals: impl IntoIterator<Item = (Key, u64)>) {
        let mut seen: HashMap<Key, u64> = HashMap::new();
        for (k, b) in totals {
            *seen.entry(k).or_insert(0) += b;
        }
        for k in self.history.keys() {
            seen.entry(*k).or_insert(0);
        }
        let first_report = self.reports == 0;
        self.reports += 1;
        for (k, bytes) in seen {
            let h = self.history.entry(k).or_insert(History {
                first: if first_report { bytes } else { 0 },
                ..Default::default()
            });
            let before = if h.reports == 0 { 0 } else { h.last };
            h.reports += 1;
            if bytes > before {
                h.grew += 1;
            } else if bytes < before {
                h.shrank += 1;
            }
            h.since_previous = delta(bytes, before);
            h.last = bytes;
        }
        // Forget stacks that hold nothing and never will be suspects.
        self.history.retain(|_, h| h.last > 0 || h.shrank == 0);
        let mut suspects: Vec<(&Key, &History)> = self
            .history
            .iter()
            .filter(|(_, h)| {
                h.reports >= MIN_REPORTS && h.shrank == 0 && h.last > 0 && h.grew * 2 > h.reports
            })
            .collect();
        suspects.sort_by(|(ka, a), (kb, b)| {
            // The larger share of reports with growth first, then the
            // larger growth, then the id (a stable order).
            (u64::from(b.grew) * u64::from(a.reports))
                .cmp(&(u64::from(a.grew) * u64::from(b.reports)))
                .then(delta(b.last, b.first).cmp(&delta(a.last, a.first)))
                .then(ka.cmp(kb))
        });
        self.ranks = suspects
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (**k, i as u32 + 1))
            .collect();
    }

    /// The trend of stack `k`.
    pub fn trend(&self, k: Key) -> Option<Trend> {
        let h = self.history.get(&k)?;
        Some(Trend {
            since_previous: h.since_previous,
            since_start: delta(h.last, h.first),
            reports: h.reports,
            grew: h.grew,
            shrank: h.shrank,
            suspect_rank: self.ranks.get(&k).copied(),
        })
    }

    /// The suspects, strongest first.
    pub fn suspects(&self) -> Vec<Key> {
        let mut v: Vec<(Key, u32)> = self.ranks.iter().map(|(k, r)| (*k, *r)).collect();
        v.sort_by_key(|(_, r)| *r);
        v.into_iter().map(|(k, _)| k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leak_is_a_suspect_a_cache_is_not() {
        let leak = (1, "heap");
        let cache = (2, "heap");
        let churn = (3, "heap");
        let mut g = Growth::default();
        // The cache fills before the first report and stays; the leak
        // grows every time; churn goes up and down.
        let reports = [
            (100, 1000, 50),
            (200, 1000, 80),
            (300, 1000, 40),
            (400, 1000, 90),
        ];
        for (i, (l, c, ch)) in reports.into_iter().enumerate() {
            g.update([(leak, l), (cache, c), (churn, ch)]);
            let t = g.trend(leak).unwrap();
            assert_eq!(t.reports, i as u32 + 1);
            assert_eq!(t.suspect_rank.is_some(), i + 1 >= MIN_REPORTS as usize);
        }
        let t = g.trend(leak).unwrap();
        assert_eq!((t.since_previous, t.grew, t.shrank), (100, 4, 0));
        assert_eq!(t.since_start, 300, "since the first report");
        assert_eq!(t.suspect_rank, Some(1));
        let c = g.trend(cache).unwrap();
        assert_eq!((c.grew, c.since_previous, c.suspect_rank), (1, 0, None));
        assert_eq!(g.trend(churn).unwrap().suspect_rank, None);
        assert_eq!(g.suspects(), [leak]);
        // Freed at last: no longer a suspect (and forgotten: it holds
        // nothing).
        g.update([(cache, 1000)]);
        assert_eq!(g.trend(leak), None);
        assert!(g.suspects().is_empty());
    }
}
