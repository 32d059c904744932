//! Offline unwinding: a recording of registers, stack bytes and the module
//! map, taken on a device (or by a test fixture), unwound and symbolized on
//! any host.
//!
//! The text format, one item per line:
//!
//! ```text
//! memleak-recording 1
//! arch x86_64|aarch64|mips32
//! endian little|big
//! regs PC SP FP RA                   (hex; registers at a function's entry)
//! stack BASE LEN                     (hex base, decimal length)
//! <hex bytes, any number per line, LEN bytes in all>
//! maps
//! <the lines of /proc/PID/maps>
//! ```

use crate::any::AnyUnwinder;
use crate::module::{ElfCache, ModuleMap};
use crate::unwinder::{Frame, StackEnd, UnwindMode};

/// A recording that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad recording, line {line}: {reason}")]
pub struct RecordingError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Registers, stack and module map of one thread at a function's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    /// ELF `e_machine` of the architecture.
    pub machine: u16,
    /// Byte order of the recorded machine.
    pub big_endian: bool,
    /// pc, sp, fp, ra.
    pub regs: [u64; 4],
    /// Address of `stack[0]` (sp).
    pub stack_base: u64,
    /// Memory from sp to the end of the stack.
    pub stack: Vec<u8>,
    /// `/proc/PID/maps` at the time.
    pub maps: String,
}

fn hex(s: Option<&str>, line: usize) -> Result<u64, RecordingError> {
    let s = s.ok_or_else(|| RecordingError {
        line,
        reason: "missing value".into(),
    })?;
    u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| RecordingError {
        line,
        reason: format!("`{s}`: {e}"),
    })
}

impl Recording {
    /// Parses the text format above.
    pub fn parse(text: &str) -> Result<Recording, RecordingError> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        let bad = |line, reason: &str| RecordingError {
            line,
            reason: reason.to_string(),
        };
        let mut next = |what: &str| {
            lines
                .next()
                .ok_or_else(|| bad(0, &format!("ends before `{what}`")))
        };
        let (n, l) = next("memleak-recording")?;
        if l.trim() != "memleak-recording 1" {
            return Err(bad(n, "not a memleak recording (version 1)"));
        }
        let (n, l) = next("arch")?;
        let machine = match l.strip_prefix("arch ").map(str::trim) {
            Some("x86_64") => object::elf::EM_X86_64.0,
            Some("aarch64") => object::elf::EM_AARCH64.0,
            Some("mips32") => object::elf::EM_MIPS.0,
            _ => return Err(bad(n, "unknown arch")),
        };
        let (n, l) = next("endian")?;
        let big_endian = match l.trim() {
            "endian big" => true,
            "endian little" => false,
            _ => return Err(bad(n, "expected `endian big|little`")),
        };
        let (n, l) = next("regs")?;
        let mut it = l.split_whitespace();
        if it.next() != Some("regs") {
            return Err(bad(n, "expected `regs PC SP FP RA`"));
        }
        let regs = [
            hex(it.next(), n)?,
            hex(it.next(), n)?,
            hex(it.next(), n)?,
            hex(it.next(), n)?,
        ];
        let (n, l) = next("stack")?;
        let mut it = l.split_whitespace();
        if it.next() != Some("stack") {
            return Err(bad(n, "expected `stack BASE LEN`"));
        }
        let stack_base = hex(it.next(), n)?;
        let len: usize = it
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(n, "bad stack length"))?;
        let mut stack = Vec::with_capacity(len);
        let mut maps = String::new();
        let mut in_maps = false;
        for (n, l) in lines {
            if in_maps {
                maps.push_str(l);
                maps.push('\n');
            } else if l.trim() == "maps" {
                in_maps = true;
            } else {
                let l = l.trim();
                if l.len() % 2 != 0 {
                    return Err(bad(n, "odd number of hex digits"));
                }
                for i in (0..l.len()).step_by(2) {
                    let b =
                        u8::from_str_radix(&l[i..i + 2], 16).map_err(|e| bad(n, &e.to_string()))?;
                    stack.push(b);
                }
            }
        }
        if stack.len() != len {
            return Err(bad(
                0,
                &format!("stack has {} bytes, header says {len}", stack.len()),
            ));
        }
        Ok(Recording {
            machine,
            big_endian,
            regs,
            stack_base,
            stack,
            maps,
        })
    }

    /// The module map of the recording, with files opened through `files`
    /// (give it a sysroot to read the device's files on a host).
    pub fn module_map(&self, files: &mut ElfCache) -> ModuleMap {
        ModuleMap::from_proc_maps(&self.maps, files)
    }

    /// Unwinds the recording: frames innermost first, and why the walk stopped.
    pub fn unwind(
        &self,
        modules: &ModuleMap,
        mode: UnwindMode,
        max_frames: usize,
    ) -> Option<(Vec<Frame>, StackEnd)> {
        let mut unwinder = AnyUnwinder::for_machine(self.machine, mode, max_frames)?;
        let mut frames = Vec::new();
        // The copy runs to the end of the stack mapping.
        let end = unwinder.unwind_at_entry(
            self.regs,
            &self.stack,
            self.big_endian,
            true,
            modules,
            &mut frames,
        );
        Some((frames, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let text = "memleak-recording 1\narch mips32\nendian big\nregs 400100 7fff0000 0 400abc\nstack 7fff0000 4\n0011\n2233\nmaps\n00400000-00401000 r-xp 00000000 00:00 0 /bin/x\n";
        let r = Recording::parse(text).unwrap();
        assert_eq!(r.machine, 8);
        assert!(r.big_endian);
        assert_eq!(r.regs, [0x400100, 0x7fff0000, 0, 0x400abc]);
        assert_eq!(r.stack, vec![0, 0x11, 0x22, 0x33]);
        assert!(r.maps.contains("/bin/x"));
        assert!(Recording::parse(&text.replace("stack 7fff0000 4", "stack 7fff0000 5")).is_err());
        assert!(Recording::parse(&text.replace("arch mips32", "arch vax")).is_err());
        assert!(Recording::parse("hello").is_err());
    }
}
