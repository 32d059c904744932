//! The file `memleak record` writes on a device and `memleak report` reads on
//! any host: what a report needs, without the device's files.
//!
//! # Layout
//!
//! ```text
//! offset  size  what
//! 0       8     magic "MEMLEAK\x01"  (not a recording otherwise)
//! 8       4     format version, little-endian u32 (this reader: 1)
//! 12      4     CRC-32 (IEEE, as zlib) of the body, little-endian
//! 16      8     length of the body in bytes, little-endian u64
//! 24      ...   body: one protobuf message `Record` (the structs below,
//!               field numbers as tagged), nothing after it
//! ```
//!
//! Every number in the body is a protobuf varint or fixed field, so the
//! file's byte order does not depend on the device's; the device's byte
//! order is a field (`big_endian`), for the stack copies.
//!
//! The recorder rewrites the whole file at each interval (a temporary file
//! renamed over it): a reader sees the last complete interval, never half
//! of one. Stacks are kept as the device unwound them (from `.eh_frame`,
//! which stripping keeps): each frame's address in the process, its
//! module and the address in that module's ELF file (its virtual address,
//! what `addr2line -e FILE` takes), and the symbol the device's file names
//! there (`.dynsym`/`.symtab`). A stack the device could not finish keeps
//! its registers and stack bytes, so that a host with `.debug_frame` can.
//!
//! Version 1. A change that an older reader would misread (a field's
//! meaning, not a new field) takes a new version.

use std::collections::HashSet;

/// The first 8 bytes of a recording.
pub const MAGIC: &[u8; 8] = b"MEMLEAK\x01";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;
const HEADER: usize = 24;

/// A recording: the device, and each traced process.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    /// Version of the memleak that wrote it.
    #[prost(string, tag = "1")]
    pub memleak_version: String,
    /// ELF `e_machine` of the traced programs.
    #[prost(uint32, tag = "2")]
    pub machine: u32,
    /// Byte order of the device.
    #[prost(bool, tag = "3")]
    pub big_endian: bool,
    /// Kernel release of the device (`uname -r`).
    #[prost(string, tag = "4")]
    pub kernel: String,
    /// Host name of the device.
    #[prost(string, tag = "5")]
    pub hostname: String,
    /// The command line memleak traced (`-- CMD`), or empty (`-p`).
    #[prost(string, repeated, tag = "6")]
    pub command: Vec<String>,
    /// True once the final report was written (else the recorder stopped
    /// early: the last interval is the last complete one).
    #[prost(bool, tag = "7")]
    pub finished: bool,
    /// Only blocks older than this were to be reported (`--older`).
    #[prost(uint64, tag = "8")]
    pub older_ms: u64,
    /// mmap regions were tracked (`--mmap`).
    #[prost(bool, tag = "9")]
    pub mmap: bool,
    /// The processes traced (the target first, then those followed, `-f`).
    #[prost(message, repeated, tag = "10")]
    pub processes: Vec<Process>,
    /// Deepest stack unwound (`--max-frames`).
    #[prost(uint32, tag = "11")]
    pub max_frames: u32,
    /// Wall-clock time the recording started, ms since the Unix epoch.
    #[prost(uint64, tag = "12")]
    pub start_unix_ms: u64,
    /// The rules the device unwound with (`--unwind`: auto, cfi, cfi-fp,
    /// fp); walks are finished on the host with the same.
    #[prost(string, tag = "13")]
    pub unwind: String,
    /// `--sample-bytes` (0: every allocation was recorded): each block of
    /// S bytes stands for 1 / (1 - exp(-S/N)) of them.
    #[prost(uint64, tag = "14")]
    pub sample_bytes: u64,
}

/// One traced process: its files, its stacks and its intervals.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Process {
    /// PID as the device's root namespace sees it.
    #[prost(int32, tag = "1")]
    pub pid: i32,
    /// PID in its own namespace (a container), 0 when the same.
    #[prost(int32, tag = "2")]
    pub ns_pid: i32,
    /// The traced process that forked it, 0 for none.
    #[prost(int32, tag = "3")]
    pub parent: i32,
    /// Its program, as the process names it.
    #[prost(string, tag = "4")]
    pub exe: String,
    /// How it ended ("exited with status 0"), empty while it ran.
    #[prost(string, tag = "5")]
    pub exit: String,
    /// Children forked and not followed (without `-f`).
    #[prost(uint64, tag = "6")]
    pub unfollowed: u64,
    /// The files its stacks pass through.
    #[prost(message, repeated, tag = "7")]
    pub modules: Vec<Module>,
    /// Every stack an interval names.
    #[prost(message, repeated, tag = "8")]
    pub stacks: Vec<Stack>,
    /// The reports, oldest first.
    #[prost(message, repeated, tag = "9")]
    pub intervals: Vec<Interval>,
}

/// An ELF file mapped in the process.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Module {
    /// Its path, as the process names it.
    #[prost(string, tag = "1")]
    pub path: String,
    /// Its build ID (`NT_GNU_BUILD_ID`), empty if it has none.
    #[prost(bytes = "vec", tag = "2")]
    pub build_id: Vec<u8>,
    /// Where it was mapped.
    #[prost(message, repeated, tag = "3")]
    pub mappings: Vec<MappedRange>,
}

/// One mapping of a module.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MappedRange {
    /// First address.
    #[prost(uint64, tag = "1")]
    pub start: u64,
    /// One past the last address.
    #[prost(uint64, tag = "2")]
    pub end: u64,
    /// File offset mapped at `start`.
    #[prost(uint64, tag = "3")]
    pub file_offset: u64,
    /// Unmapped before the recording's end (a library dlclose()d).
    #[prost(bool, tag = "4")]
    pub retired: bool,
}

/// A unique stack.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Stack {
    /// memleak's id of the stack (as live reports print it).
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Why the walk ended (`outermost`, `truncated`, `no_unwind_info`, ...).
    #[prost(string, tag = "2")]
    pub end: String,
    /// Innermost first.
    #[prost(message, repeated, tag = "3")]
    pub frames: Vec<FrameRecord>,
    /// The registers and stack bytes of a walk the device could not finish.
    #[prost(message, optional, tag = "4")]
    pub copy: Option<StackCopy>,
}

/// One frame of a stack.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FrameRecord {
    /// The address in the process (a return address from frame 1 on).
    #[prost(uint64, tag = "1")]
    pub address: u64,
    /// How it was found: 0 regs, 1 entry, 2 cfi, 3 fp, 4 prologue, 5 scan.
    #[prost(uint32, tag = "2")]
    pub method: u32,
    /// 1 + index of its module in `Process::modules`; 0 for none.
    #[prost(uint32, tag = "3")]
    pub module: u32,
    /// The address looked up in the module's file (for a return address,
    /// that of the call: one byte before it).
    #[prost(uint64, tag = "4")]
    pub module_address: u64,
    /// The symbol the device's file names there, if any.
    #[prost(string, tag = "5")]
    pub symbol: String,
    /// `module_address` minus the symbol's address.
    #[prost(uint64, tag = "6")]
    pub symbol_offset: u64,
}

/// Registers and stack of a thread at the allocator's entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StackCopy {
    /// pc, sp, fp, ra.
    #[prost(uint64, repeated, tag = "1")]
    pub regs: Vec<u64>,
    /// The stack from sp up.
    #[prost(bytes = "vec", tag = "2")]
    pub bytes: Vec<u8>,
    /// The copy runs to the end of the stack.
    #[prost(bool, tag = "3")]
    pub reached_end: bool,
}

/// One report: the outstanding blocks at a time.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Interval {
    /// Wall-clock time, milliseconds since the Unix epoch.
    #[prost(uint64, tag = "1")]
    pub unix_ms: u64,
    /// The final report (the process ended or the recorder was stopped).
    #[prost(bool, tag = "2")]
    pub is_final: bool,
    /// Outstanding bytes and blocks by stack and category.
    #[prost(message, repeated, tag = "3")]
    pub totals: Vec<StackTotal>,
    /// Each outstanding block; kept for the latest interval only.
    #[prost(message, repeated, tag = "4")]
    pub blocks: Vec<Block>,
    /// Every counter of losses and work, by name.
    #[prost(message, repeated, tag = "5")]
    pub counters: Vec<Counter>,
    /// Events lost in all (the sum of the loss counters).
    #[prost(uint64, tag = "6")]
    pub lost_events: u64,
    /// Blocks whose stack walk ran out of copy or frames.
    #[prost(uint64, tag = "7")]
    pub truncated_stacks: u64,
}

/// A category of blocks: 0 heap, 1 mmap.
pub const HEAP: u32 = 0;
/// See [`HEAP`].
pub const MMAP: u32 = 1;

/// What one stack holds at an interval.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StackTotal {
    /// Index in `Process::stacks`.
    #[prost(uint32, tag = "1")]
    pub stack: u32,
    /// [`HEAP`] or [`MMAP`].
    #[prost(uint32, tag = "2")]
    pub category: u32,
    /// Outstanding bytes.
    #[prost(uint64, tag = "3")]
    pub bytes: u64,
    /// Outstanding blocks.
    #[prost(uint64, tag = "4")]
    pub blocks: u64,
    /// Age of the oldest, nanoseconds.
    #[prost(uint64, tag = "5")]
    pub oldest_ns: u64,
}

/// One outstanding block.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Block {
    /// Its address.
    #[prost(uint64, tag = "1")]
    pub address: u64,
    /// Its size.
    #[prost(uint64, tag = "2")]
    pub size: u64,
    /// Index in `Process::stacks`.
    #[prost(uint32, tag = "3")]
    pub stack: u32,
    /// [`HEAP`] or [`MMAP`].
    #[prost(uint32, tag = "4")]
    pub category: u32,
    /// Its age at the interval, nanoseconds.
    #[prost(uint64, tag = "5")]
    pub age_ns: u64,
}

/// A named counter.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Counter {
    /// Its name, as reports print it.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its value.
    #[prost(uint64, tag = "2")]
    pub value: u64,
}

/// A file that is not a recording this memleak can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Not a memleak recording at all.
    #[error("not a memleak recording")]
    NotARecording,
    /// Written by a memleak with another format version.
    #[error("recording format version {0}; this memleak reads version {VERSION}")]
    Version(u32),
    /// Shorter than its header says: cut off while copied.
    #[error("truncated: {have} of {want} bytes")]
    Truncated {
        /// Bytes present.
        have: u64,
        /// Bytes the header announces.
        want: u64,
    },
    /// Bytes after the body.
    #[error("{0} bytes after the end of the recording")]
    Trailing(u64),
    /// The body's checksum does not match.
    #[error("corrupted (checksum mismatch)")]
    Checksum,
    /// The body does not decode, or names what it does not hold.
    #[error("malformed: {0}")]
    Malformed(String),
}

/// The file's bytes for `record`.
pub fn encode(record: &Record) -> Vec<u8> {
    use prost::Message as _;
    wrap(&record.encode_to_vec())
}

/// `body` (an encoded [`Record`], or any bytes) behind a valid header.
pub fn wrap(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&crate::elf::crc32(body).to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads a recording and checks that every index in it points at
/// something: what `decode` returns can be used without further checks.
pub fn decode(bytes: &[u8]) -> Result<Record, ReadError> {
    use prost::Message as _;
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(ReadError::NotARecording);
    }
    let word = |at: usize, n: usize| -> Option<u64> {
        let b = bytes.get(at..at + n)?;
        Some(b.iter().rev().fold(0u64, |v, &x| v << 8 | u64::from(x)))
    };
    let (Some(version), Some(crc), Some(len)) = (word(8, 4), word(12, 4), word(16, 8)) else {
        return Err(ReadError::Truncated {
            have: bytes.len() as u64,
            want: HEADER as u64,
        });
    };
    if version != u64::from(VERSION) {
        return Err(ReadError::Version(version as u32));
    }
    let body = &bytes[HEADER..];
    let have = body.len() as u64;
    if have < len {
        return Err(ReadError::Truncated {
            have: bytes.len() as u64,
            want: len.saturating_add(HEADER as u64),
        });
    }
    if have > len {
        return Err(ReadError::Trailing(have - len));
    }
    if u64::from(crate::elf::crc32(body)) != crc {
        return Err(ReadError::Checksum);
    }
    let record = Record::decode(body).map_err(|e| ReadError::Malformed(e.to_string()))?;
    check(&record).map_err(ReadError::Malformed)?;
    Ok(record)
}

/// Highest valid [`FrameRecord::method`].
pub const MAX_METHOD: u32 = 5;

fn check(r: &Record) -> Result<(), String> {
    if crate::AnyUnwinder::for_machine(r.machine as u16, crate::UnwindMode::Auto, 2).is_none()
        || r.machine > u32::from(u16::MAX)
    {
        return Err(format!("machine {} is not one memleak unwinds", r.machine));
    }
    if crate::UnwindMode::from_name(&r.unwind).is_none() {
        return Err(format!("unknown unwind mode `{}`", r.unwind));
    }
    let mut pids = HashSet::new();
    for p in &r.processes {
        if !pids.insert(p.pid) {
            return Err(format!("process {} appears twice", p.pid));
        }
        let n_stacks = p.stacks.len();
        for (i, s) in p.stacks.iter().enumerate() {
            for f in &s.frames {
                if f.module as usize > p.modules.len() {
                    return Err(format!(
                        "stack {i} of process {}: no module {}",
                        p.pid, f.module
                    ));
                }
                if f.method > MAX_METHOD {
                    return Err(format!("stack {i}: unknown method {}", f.method));
                }
            }
            if let Some(c) = &s.copy {
                if c.regs.len() != 4 {
                    return Err(format!("stack {i}: {} registers, not 4", c.regs.len()));
                }
            }
        }
        for (n, iv) in p.intervals.iter().enumerate() {
            let stacks = iv
                .totals
                .iter()
                .map(|t| (t.stack, t.category))
                .chain(iv.blocks.iter().map(|b| (b.stack, b.category)));
            for (stack, category) in stacks {
                if stack as usize >= n_stacks {
                    return Err(format!(
                        "interval {n} of process {}: no stack {stack}",
                        p.pid
                    ));
                }
                if category > MMAP {
                    return Err(format!("interval {n}: unknown category {category}"));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            memleak_version: "0.1.0".into(),
            machine: 8,
            big_endian: true,
            unwind: "auto".into(),
            kernel: "6.1.0".into(),
            processes: vec![Process {
                pid: 42,
                exe: "/bin/x".into(),
                modules: vec![Module {
                    path: "/bin/x".into(),
                    build_id: vec![1, 2, 3],
                    mappings: vec![MappedRange {
                        start: 0x400000,
                        end: 0x401000,
                        ..Default::default()
                    }],
                }],
                stacks: vec![Stack {
                    id: 7,
                    end: "outermost".into(),
                    frames: vec![FrameRecord {
                        address: 0x400100,
                        module: 1,
                        module_address: 0x400100,
                        symbol: "main".into(),
                        ..Default::default()
                    }],
                    copy: None,
                }],
                intervals: vec![Interval {
                    is_final: true,
                    totals: vec![StackTotal {
                        stack: 0,
                        bytes: 10,
                        blocks: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_and_every_kind_of_bad_file() {
        let r = sample();
        let bytes = encode(&r);
        assert_eq!(decode(&bytes).unwrap(), r);
        assert_eq!(decode(b"hello"), Err(ReadError::NotARecording));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 3]),
            Err(ReadError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&bytes[..10]),
            Err(ReadError::Truncated { .. })
        ));
        let mut v2 = bytes.clone();
        v2[8] = 2;
        assert_eq!(decode(&v2), Err(ReadError::Version(2)));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert_eq!(decode(&flipped), Err(ReadError::Checksum));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(ReadError::Trailing(1)));
        // Indexes that point nowhere are refused, checksum or not.
        let mut bad = r.clone();
        bad.processes[0].intervals[0].totals[0].stack = 1;
        assert!(matches!(
            decode(&encode(&bad)),
            Err(ReadError::Malformed(_))
        ));
        let mut bad = r.clone();
        bad.processes[0].stacks[0].frames[0].module = 2;
        assert!(matches!(
            decode(&encode(&bad)),
            Err(ReadError::Malformed(_))
        ));
        let mut bad = r;
        bad.machine = 3;
        assert!(matches!(
            decode(&encode(&bad)),
            Err(ReadError::Malformed(_))
        ));
    }
}
