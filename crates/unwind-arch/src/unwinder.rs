//! The unwinder: walks a stack copy from a probe's registers, one rule per
//! frame: the entry rule for the allocator's caller, then CFI, then the
//! architecture's fallback.

use std::marker::PhantomData;

use log::trace;

use crate::arch::Arch;
use crate::cache::{CacheStats, RuleCache};
use crate::cfi::{find_cfi_rule, CfiLookup, UnwindContext};
use crate::error::UnwindError;
use crate::module::ModuleMap;
use crate::regs::UnwindRegs;
use crate::rule::UnwindRule;
use crate::stack::StackMemory;

/// How a frame was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// From the registers at the probe (frame 0).
    Regs,
    /// From the state at a function's entry: the return address a call just
    /// left in a register or at [sp] (frame 1).
    Entry,
    /// From DWARF CFI (`.eh_frame` or `.debug_frame`).
    Cfi,
    /// From the frame-pointer chain.
    Fp,
    /// From prologue analysis (mips32).
    Prologue,
}

impl Method {
    /// Name used in reports: `regs`, `entry`, `cfi`, `fp`, `prologue`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Regs => "regs",
            Method::Entry => "entry",
            Method::Cfi => "cfi",
            Method::Fp => "fp",
            Method::Prologue => "prologue",
        }
    }
}

/// One frame: an address in the process (AVMA) and how it was found.
/// Frames after the first hold return addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Frame {
    /// The pc (frame 0) or a return address.
    pub address: u64,
    /// How the frame was found.
    pub method: Method,
}

/// Why the walk stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackEnd {
    /// The outermost frame was reached (return address undefined or zero).
    Outermost,
    /// The stack copy was too short for the next frame (`--stack-bytes`).
    Truncated,
    /// More frames than the limit.
    MaxDepth,
    /// A pc outside every known module, or without CFI where the fallback
    /// is disabled (`--unwind cfi`) or unavailable.
    NoUnwindInfo,
    /// A rule produced something impossible.
    Error(UnwindError),
}

impl StackEnd {
    /// True when the walk ended before the outermost frame for a reason the
    /// user can fix (a bigger stack copy, a deeper limit).
    pub fn is_truncated(self) -> bool {
        matches!(self, StackEnd::Truncated | StackEnd::MaxDepth)
    }
}

/// One rule looked up during a walk (see [`Unwinder::unwind_logged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleLookup {
    /// The address looked up (AVMA): a return address minus one.
    pub address: u64,
    /// The rule and where it came from; `None` where there is none.
    pub rule: Option<(UnwindRule, Method)>,
}

/// Which rules the unwinder may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnwindMode {
    /// CFI where it exists, the fallback elsewhere.
    #[default]
    Auto,
    /// CFI only.
    Cfi,
    /// Frame pointers only (as BCC and libbpf-tools).
    FramePointer,
}

/// Walks stacks of architecture `A`. Keep one per traced process: it caches
/// rules per address.
pub struct Unwinder<A: Arch> {
    ctx: Box<UnwindContext>,
    cache: RuleCache,
    mode: UnwindMode,
    max_frames: usize,
    last_sp: u64,
    _arch: PhantomData<A>,
}

impl<A: Arch> Default for Unwinder<A> {
    fn default() -> Self {
        Self::new(UnwindMode::Auto, 128)
    }
}

impl<A: Arch> Unwinder<A> {
    /// An unwinder using `mode`, stopping after `max_frames` frames.
    pub fn new(mode: UnwindMode, max_frames: usize) -> Self {
        Unwinder {
            ctx: Box::new(UnwindContext::new()),
            cache: RuleCache::new(),
            mode,
            max_frames: max_frames.max(2),
            last_sp: 0,
            _arch: PhantomData,
        }
    }

    /// Rule-cache statistics.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats
    }

    /// The stack pointer of the last frame the latest walk reached: every
    /// stack read of that walk was below it.
    pub fn last_sp(&self) -> u64 {
        self.last_sp
    }

    fn rule_for(&mut self, modules: &ModuleMap, avma: u64) -> Option<(UnwindRule, Method)> {
        if self.mode == UnwindMode::FramePointer {
            return A::frame_pointer_rule().map(|r| (r, Method::Fp));
        }
        let found = modules
            .find(avma)
            .and_then(|m| Some((m, m.avma_to_svma(avma)?)));
        let Some((m, svma)) = found else {
            return match self.mode {
                UnwindMode::Auto => A::fallback_rule(None, avma),
                _ => None,
            };
        };
        let file = m.elf.id();
        if let Some(r) = self.cache.get(file, svma) {
            return r;
        }
        let r = match find_cfi_rule::<A>(&m.elf, svma, &mut self.ctx) {
            CfiLookup::Rule(rule, _) => Some((rule, Method::Cfi)),
            CfiLookup::Unsupported | CfiLookup::NotCovered => match self.mode {
                UnwindMode::Auto => A::fallback_rule(Some(&m.elf), svma),
                _ => None,
            },
        };
        self.cache.insert(file, svma, r);
        r
    }

    /// Walks the stack from `regs`, appending frames to `frames` (innermost
    /// first). `at_function_entry` says the registers were captured at a
    /// function's first instruction (a uprobe on the allocator), so the
    /// caller is found with [`Arch::entry_rule`].
    pub fn unwind(
        &mut self,
        regs: UnwindRegs,
        at_function_entry: bool,
        stack: &impl StackMemory,
        modules: &ModuleMap,
        frames: &mut Vec<Frame>,
    ) -> StackEnd {
        self.unwind_logged(regs, at_function_entry, stack, modules, frames, None)
    }

    /// [`unwind`](Self::unwind), also appending to `rules` every rule looked
    /// up on the way: the address looked up (a return address minus one, or
    /// the pc of the first frame) and the rule found there (`None`: none).
    /// A cache of exactly these answers walks the same stack again without
    /// the ELF files (memleak's in-kernel walk).
    pub fn unwind_logged(
        &mut self,
        regs: UnwindRegs,
        at_function_entry: bool,
        stack: &impl StackMemory,
        modules: &ModuleMap,
        frames: &mut Vec<Frame>,
        mut rules: Option<&mut Vec<RuleLookup>>,
    ) -> StackEnd {
        self.last_sp = regs.sp;
        let mut regs = regs;
        frames.push(Frame {
            address: regs.pc,
            method: Method::Regs,
        });
        let mut first = true;
        loop {
            if frames.len() >= self.max_frames {
                return StackEnd::MaxDepth;
            }
            // Return addresses point after the call: look up the call itself.
            let (rule, method) = if first && at_function_entry {
                (A::entry_rule(), Method::Entry)
            } else {
                let lookup = if first {
                    regs.pc
                } else {
                    regs.pc.saturating_sub(1)
                };
                let found = self.rule_for(modules, lookup);
                if let Some(log) = rules.as_deref_mut() {
                    log.push(RuleLookup {
                        address: lookup,
                        rule: found,
                    });
                }
                match found {
                    Some(r) => r,
                    None => return StackEnd::NoUnwindInfo,
                }
            };
            first = false;
            let next = match rule.exec(&regs, stack) {
                Ok(Some(next)) => next,
                Ok(None) => return StackEnd::Outermost,
                Err(UnwindError::StackCopyTooShort(_)) => return StackEnd::Truncated,
                Err(e) => return StackEnd::Error(e),
            };
            if next.sp < regs.sp {
                return StackEnd::Error(UnwindError::StackPointerMovedBackwards);
            }
            if next.sp == regs.sp && next.pc == regs.pc {
                return StackEnd::Error(UnwindError::DidNotAdvance);
            }
            let pc = A::strip_return_address(next.pc);
            trace!("frame {:#x} via {}", pc, method.name());
            frames.push(Frame {
                address: pc,
                method,
            });
            regs = UnwindRegs { pc, ..next };
            self.last_sp = regs.sp;
        }
    }
}
