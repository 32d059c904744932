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
    /// From prologue analysis: the function's machine code.
    Prologue,
    /// From a scan of the stack for a return address that follows a call
    /// (the last resort; never cached in the kernel).
    Scan,
}

impl Method {
    /// Every method, in the order of their codes in recordings.
    pub const ALL: [Method; 6] = [
        Method::Regs,
        Method::Entry,
        Method::Cfi,
        Method::Fp,
        Method::Prologue,
        Method::Scan,
    ];

    /// Name used in reports: `regs`, `entry`, `cfi`, `fp`, `prologue`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Regs => "regs",
            Method::Entry => "entry",
            Method::Cfi => "cfi",
            Method::Fp => "fp",
            Method::Prologue => "prologue",
            Method::Scan => "scan",
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
    /// The rule and where it came from; `None` where there is none (or
    /// where the walk went on by scanning).
    pub rule: Option<(UnwindRule, Method)>,
    /// The walk went on from here by scanning the stack: no rule holds
    /// for this address, each stack through it must be scanned again.
    pub scanned: bool,
}

/// Which rules the unwinder may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnwindMode {
    /// CFI where it exists; elsewhere the function's machine code (prologue
    /// analysis, which also tells frame-pointer functions), then the
    /// frame-pointer chain, each checked (the return address it gives must
    /// follow a call); then a scan of the stack for such a return address.
    #[default]
    Auto,
    /// CFI only.
    Cfi,
    /// CFI, and frame pointers elsewhere, unchecked (no prologue analysis
    /// and no scan).
    CfiFp,
    /// Frame pointers only (as BCC and libbpf-tools).
    FramePointer,
}

impl UnwindMode {
    /// Every mode, by the name `--unwind` takes.
    pub const NAMES: [(&'static str, UnwindMode); 4] = [
        ("auto", UnwindMode::Auto),
        ("cfi", UnwindMode::Cfi),
        ("cfi-fp", UnwindMode::CfiFp),
        ("fp", UnwindMode::FramePointer),
    ];

    /// The mode named `name` (as `--unwind` takes it).
    pub fn from_name(name: &str) -> Option<UnwindMode> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| *m)
    }

    /// Its name, as `--unwind` takes it.
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("auto", |(n, _)| n)
    }
}

/// The rule a lookup found, before it is checked against the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// A rule to run as it is (CFI, or the fallback of the modes that do
    /// not check).
    Rule(UnwindRule, Method),
    /// A rule of the code fallbacks that passed the check once; checked on
    /// every use.
    Checked(UnwindRule, Method),
    /// No CFI in a module: try the code fallbacks, then scan.
    Fallbacks,
    /// No rule at all: the walk ends.
    None,
}

/// How many stack slots a scan looks at (from the frame's sp upwards).
const SCAN_WORDS: u64 = 512;

/// The walk ends in the process's first function: `_start` (`__start` on
/// mips) sets up the stack itself (it realigns sp), and its caller's return
/// address is not on the stack.
const OUTERMOST: UnwindRule = UnwindRule {
    cfa: crate::rule::CfaRule::RegOffset(crate::rule::Reg::Sp, 0),
    ra: crate::rule::RegRule::Undefined,
    fp: crate::rule::RegRule::SameValue,
};

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

    fn rule_for(&mut self, modules: &ModuleMap, avma: u64) -> Found {
        let fp = || A::frame_pointer_rule().map_or(Found::None, |r| Found::Rule(r, Method::Fp));
        if self.mode == UnwindMode::FramePointer {
            return fp();
        }
        let found = modules
            .find(avma)
            .and_then(|m| Some((m, m.avma_to_svma(avma)?)));
        let Some((m, svma)) = found else {
            trace!("{avma:#x}: in no module");
            // JIT code, anonymous mappings: frame pointers are all there is.
            return match self.mode {
                UnwindMode::Auto | UnwindMode::CfiFp => fp(),
                _ => Found::None,
            };
        };
        let file = m.elf.id();
        if let Some(r) = self.cache.get(file, svma) {
            return r;
        }
        let r = match find_cfi_rule::<A>(&m.elf, svma, &mut self.ctx) {
            CfiLookup::Rule(rule, _) => Found::Rule(rule, Method::Cfi),
            CfiLookup::Unsupported | CfiLookup::NotCovered => match self.mode {
                UnwindMode::Auto => {
                    if m.elf
                        .find_symbol(svma)
                        .is_some_and(|(name, _)| matches!(name, "_start" | "__start"))
                    {
                        Found::Rule(OUTERMOST, Method::Prologue)
                    } else {
                        // Not cached: the rule chosen is cached once it checks.
                        return Found::Fallbacks;
                    }
                }
                UnwindMode::CfiFp => fp(),
                _ => Found::None,
            },
        };
        self.cache.insert(file, svma, r);
        r
    }

    /// Is `ra` a return address: in a module's code, just after a call?
    fn is_return_address(modules: &ModuleMap, ra: u64) -> bool {
        let Some(m) = modules.find(ra) else {
            return false;
        };
        m.avma_to_svma(ra)
            .is_some_and(|svma| m.elf.is_code(svma) && A::is_call_site(&m.elf, svma))
    }

    /// Runs a rule that must check: the caller's sp above ours and its pc
    /// just after a call (or the outermost frame).
    fn run_checked(
        rule: &UnwindRule,
        regs: &UnwindRegs,
        stack: &impl StackMemory,
        modules: &ModuleMap,
    ) -> Option<Option<UnwindRegs>> {
        match rule.exec(regs, stack) {
            Ok(None) => Some(None),
            Ok(Some(next)) => (next.sp > regs.sp
                && Self::is_return_address(modules, A::strip_return_address(next.pc)))
            .then_some(Some(next)),
            Err(_) => None,
        }
    }

    /// The code fallbacks for the pc looked up at `avma`, in order, each
    /// checked: the first that checks is cached and used.
    fn try_fallbacks(
        &mut self,
        avma: u64,
        regs: &UnwindRegs,
        stack: &impl StackMemory,
        modules: &ModuleMap,
    ) -> Option<(UnwindRule, Method, Option<UnwindRegs>)> {
        let m = modules.find(avma)?;
        let svma = m.avma_to_svma(avma)?;
        let mut rules = Vec::new();
        let exact = A::code_rules(&m.elf, svma, &mut rules);
        rules.extend(A::frame_pointer_rule().map(|r| (r, Method::Fp)));
        for (i, (rule, method)) in rules.into_iter().enumerate() {
            let next = Self::run_checked(&rule, regs, stack, modules);
            trace!("{avma:#x}: candidate {method:?} {rule:?}: {next:?}");
            // Only the rule from the function's known start may end the walk.
            if let Some(next) = next.filter(|n| n.is_some() || (exact && i == 0)) {
                self.cache
                    .insert(m.elf.id(), svma, Found::Checked(rule, method));
                return Some((rule, method, next));
            }
        }
        None
    }

    /// The last resort: the nearest slot above sp holding a return address
    /// (just after a call, in a module's code), and the caller's sp — fixed
    /// by the ABI (x86_64) or the lowest one from which the caller's own
    /// rule checks.
    fn scan(
        &mut self,
        regs: &UnwindRegs,
        stack: &impl StackMemory,
        modules: &ModuleMap,
    ) -> Option<UnwindRegs> {
        let word = u64::from(A::ADDRESS_SIZE);
        for i in 0..SCAN_WORDS {
            let slot = regs.sp.checked_add(i * word)?;
            let Ok(value) = stack.read_word(slot) else {
                return None;
            };
            let ra = A::strip_return_address(value);
            if !Self::is_return_address(modules, ra) {
                continue;
            }
            if let Some(sp) = A::scanned_caller_sp(slot) {
                return Some(UnwindRegs {
                    pc: ra,
                    sp,
                    fp: regs.fp,
                    ra: None,
                });
            }
            // The caller's sp: the lowest above the slot from which the
            // caller's rule gives a checked return address.
            let mut rules = Vec::new();
            match self.rule_for(modules, ra - 1) {
                Found::Rule(r, _) | Found::Checked(r, _) => rules.push(r),
                Found::Fallbacks => {
                    if let Some((m, svma)) = modules
                        .find(ra - 1)
                        .and_then(|m| Some((m, m.avma_to_svma(ra - 1)?)))
                    {
                        let mut found = Vec::new();
                        A::code_rules(&m.elf, svma, &mut found);
                        rules.extend(found.into_iter().map(|(r, _)| r));
                    }
                }
                Found::None => {}
            }
            for k in 1..SCAN_WORDS {
                let caller = UnwindRegs {
                    pc: ra,
                    sp: slot.checked_add(k * word)?,
                    fp: regs.fp,
                    ra: None,
                };
                let checks = |r: &UnwindRule| {
                    matches!(Self::run_checked(r, &caller, stack, modules), Some(Some(_)))
                };
                if rules.iter().any(checks) {
                    return Some(caller);
                }
            }
        }
        None
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
            let at_entry = first && at_function_entry;
            // Return addresses point after the call: look up the call itself.
            let lookup = if first {
                regs.pc
            } else {
                regs.pc.saturating_sub(1)
            };
            first = false;
            let found = if at_entry {
                Found::Rule(A::entry_rule(), Method::Entry)
            } else {
                self.rule_for(modules, lookup)
            };
            trace!("lookup {lookup:#x}: {found:?}");
            let mut log = |rule, scanned| {
                if let Some(log) = rules.as_deref_mut() {
                    log.push(RuleLookup {
                        address: lookup,
                        rule,
                        scanned,
                    });
                }
            };
            let (next, method) = match found {
                Found::Rule(rule, method) => {
                    if !at_entry {
                        log(Some((rule, method)), false);
                    }
                    match rule.exec(&regs, stack) {
                        Ok(Some(next)) => (next, method),
                        Ok(None) => return StackEnd::Outermost,
                        Err(UnwindError::StackCopyTooShort(_)) => return StackEnd::Truncated,
                        Err(e) => return StackEnd::Error(e),
                    }
                }
                Found::None => {
                    log(None, false);
                    return StackEnd::NoUnwindInfo;
                }
                Found::Checked(..) | Found::Fallbacks => {
                    let checked = match found {
                        Found::Checked(rule, method) => {
                            Self::run_checked(&rule, &regs, stack, modules)
                                .map(|next| (rule, method, next))
                        }
                        _ => None,
                    };
                    let checked =
                        checked.or_else(|| self.try_fallbacks(lookup, &regs, stack, modules));
                    match checked {
                        Some((rule, method, next)) => {
                            log(Some((rule, method)), false);
                            match next {
                                Some(next) => (next, method),
                                None => return StackEnd::Outermost,
                            }
                        }
                        None => match self.scan(&regs, stack, modules) {
                            Some(next) => {
                                log(None, true);
                                (next, Method::Scan)
                            }
                            None => {
                                // Nothing to scan to (typically the stack's
                                // first function, below argv): the walk ends
                                // here, now and on every later stack through
                                // this pc (the kernel caches that too), so the
                                // two walks agree.
                                if let Some(m) = modules.find(lookup) {
                                    if let Some(svma) = m.avma_to_svma(lookup) {
                                        self.cache.insert(m.elf.id(), svma, Found::None);
                                    }
                                }
                                log(None, false);
                                return StackEnd::NoUnwindInfo;
                            }
                        },
                    }
                }
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
