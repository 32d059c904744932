//! What prologue analysis shares across architectures: finding where the
//! function holding a pc starts, when CFI is missing.

use crate::elf::ElfFile;
use crate::rule::UnwindRule;
use crate::unwinder::Method;

/// How far back to look for the start of a function without a symbol.
const MAX_BACKWARD: u64 = 16 * 1024;
/// How many likely starts to offer for one pc.
const MAX_CANDIDATES: usize = 8;

/// An architecture's ways to find and analyse function starts.
pub(crate) struct Starts {
    /// Function starts the code names (call targets, addresses taken):
    /// one sweep per file, cached in the file.
    pub sweep: fn(&ElfFile) -> Vec<u64>,
    /// Instruction alignment of likely starts when looking backwards.
    pub step: u64,
    /// Whether an address looks like a function's first instruction.
    pub looks_like_start: fn(&ElfFile, u64) -> bool,
    /// Prologue analysis of the function starting at the first address,
    /// up to the second.
    pub analyze: fn(&ElfFile, u64, u64) -> Option<(UnwindRule, Method)>,
}

impl Starts {
    /// Rules for `svma` from its function's instructions: from the
    /// function's sized symbol (returns true: the start is known), or — for
    /// code without one (static functions of a stripped library) — from the
    /// nearest start the code names, then each likely start looking
    /// backwards, then a symbol without a size (an assembly label); the
    /// unwinder keeps the first whose return address checks.
    pub(crate) fn code_rules(
        &self,
        elf: &ElfFile,
        svma: u64,
        out: &mut Vec<(UnwindRule, Method)>,
    ) -> bool {
        if let Some(start) = elf.find_sized_symbol(svma) {
            out.extend((self.analyze)(elf, start, svma));
            return true;
        }
        let offer = |start: u64, out: &mut Vec<(UnwindRule, Method)>| {
            let r = (self.analyze)(elf, start, svma);
            if let Some(r) = r.filter(|r| !out.contains(r)) {
                out.push(r);
            }
            r.is_some()
        };
        let label = elf.find_symbol(svma).map(|(_, start)| start);
        let floor = svma.saturating_sub(MAX_BACKWARD).max(label.unwrap_or(0));
        let starts = elf.code_starts(self.sweep);
        let i = starts.partition_point(|&a| a <= svma);
        if let Some(&start) = i.checked_sub(1).and_then(|i| starts.get(i)) {
            if start > floor {
                offer(start, out);
            }
        }
        let mut a = svma & !(self.step - 1);
        let mut found = 0;
        while a > floor && a >= self.step && found < MAX_CANDIDATES {
            if (self.looks_like_start)(elf, a) && offer(a, out) {
                found += 1;
            }
            a -= self.step;
        }
        if let Some(start) = label {
            offer(start, out);
        }
        false
    }
}
