//! The progress line on stderr during a long run: time, stacks walked in
//! the kernel and the rule cache's hit rate, misses unwound here, stacks
//! known, events lost. Redrawn in place on a terminal (and cleared before
//! each report); without a terminal, only with `-v`, as a log line every
//! ten seconds.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use memleak_bpf::Counter;

pub struct Progress {
    terminal: bool,
    every: Duration,
    started: Instant,
    last: Option<Instant>,
    shown: bool,
}

impl Progress {
    /// A progress line, or none: off with `-t` (whose lines go to stderr),
    /// and off without a terminal unless `-v`.
    pub fn new(verbose: u8, trace: bool) -> Option<Progress> {
        let terminal = std::io::stderr().is_terminal();
        if trace || !(terminal || verbose > 0) {
            return None;
        }
        Some(Progress {
            terminal,
            every: if terminal {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(10)
            },
            started: Instant::now(),
            last: None,
            shown: false,
        })
    }

    /// Redraws the line when it is due.
    pub fn tick(&mut self, counters: impl FnOnce() -> Line) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            return;
        }
        self.last = Some(now);
        let line = counters().render(now.duration_since(self.started));
        if self.terminal {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{line}\x1b[K");
            let _ = err.flush();
            self.shown = true;
        } else {
            log::info!("{line}");
        }
    }

    /// Clears the line before a report or a message is written.
    pub fn clear(&mut self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.shown = false;
        }
    }
}

/// What the line says.
pub struct Line {
    pub counters: Vec<u64>,
    pub misses_resolved: u64,
    pub stacks: usize,
    pub lost: u64,
}

impl Line {
    fn render(&self, elapsed: Duration) -> String {
        let c = |x: Counter| self.counters.get(x as usize).copied().unwrap_or(0);
        // The rule cache's hit rate: the allocations whose stack the
        // kernel walked through cached rules alone.
        let (walked, misses) = (c(Counter::KernelStacks), c(Counter::Misses));
        let rate = if walked + misses > 0 {
            format!(
                " ({:.1}% from the rule cache)",
                100.0 * walked as f64 / (walked + misses) as f64
            )
        } else {
            String::new()
        };
        format!(
            "memleak {:.0} s: {walked} stacks walked in the kernel{rate}, {} misses unwound here, {} unique stacks, {} events lost",
            elapsed.as_secs_f64(),
            self.misses_resolved,
            self.stacks,
            self.lost
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_walks_hit_rate_misses_stacks_losses() {
        let mut counters = vec![0u64; Counter::ALL.len()];
        counters[Counter::KernelStacks as usize] = 990;
        counters[Counter::Misses as usize] = 10;
        let line = Line {
            counters,
            misses_resolved: 10,
            stacks: 4,
            lost: 0,
        };
        assert_eq!(
            line.render(Duration::from_secs(12)),
            "memleak 12 s: 990 stacks walked in the kernel (99.0% from the rule cache), \
             10 misses unwound here, 4 unique stacks, 0 events lost"
        );
    }
}
