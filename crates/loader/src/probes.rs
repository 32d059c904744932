//! Loads the BPF object (no kernel BTF needed), configures it, attaches its
//! programs to the allocator and reads its counters.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use libbpf_rs::{Link, MapCore, MapFlags, Object, ObjectBuilder, PrintLevel};
use log::{debug, info};
use memleak_bpf::{map, prog, Config, Counter, Kind, Pod};

use crate::allocator::Allocator;
use crate::cli::Options;

fn libbpf_log(level: PrintLevel, msg: String) {
    let msg = msg.trim_end();
    match level {
        // A failure libbpf warns about comes back as an error, which memleak
        // reports in one line; libbpf's own words are for -v.
        PrintLevel::Warn => info!(target: "libbpf", "{msg}"),
        PrintLevel::Info => debug!(target: "libbpf", "{msg}"),
        // -vv asked for the verifier's statistics: one line per program.
        PrintLevel::Debug if msg.contains("LOAD LOG") && msg.contains("processed ") => {
            let prog = msg.split('\'').nth(1).unwrap_or("?");
            let stats = msg
                .lines()
                .find(|l| l.contains("processed "))
                .unwrap_or_default()
                .trim();
            debug!(target: "verifier", "{prog}: {stats}")
        }
        PrintLevel::Debug => log::trace!(target: "libbpf", "{msg}"),
    }
}

/// The errno in a libbpf-rs error, if it carries one.
pub fn errno_of(e: &libbpf_rs::Error) -> Option<i32> {
    let text = format!("{e:#}");
    let start = text.rfind("(os error ")? + "(os error ".len();
    text[start..].split(')').next()?.parse().ok()
}

/// Plain advice for the errnos users meet at load or attach time.
fn explain(errno: Option<i32>, what: &str, pid: i32) -> Option<String> {
    Some(match errno? {
        libc::EACCES if what.starts_with("loading") => {
            format!("{what}: the kernel's verifier rejected them (run with -vv to see its log)")
        }
        // Single uprobes come from perf_event_open, which wants
        // CAP_SYS_ADMIN again since "perf: Revert to requiring
        // CAP_SYS_ADMIN for uprobes" (2025, also in the 6.6 and 6.12 stable kernels);
        // multi-uprobe links (6.6+) need CAP_BPF and CAP_PERFMON only.
        libc::EPERM | libc::EACCES if what.starts_with("attaching uprobe to ") => format!(
            "{what}: permission denied (this kernel creates single uprobes for CAP_SYS_ADMIN \
             only; run as root or with CAP_SYS_ADMIN)"
        ),
        libc::EPERM | libc::EACCES => {
            format!("{what}: permission denied (run as root, or with CAP_BPF and CAP_PERFMON)")
        }
        libc::ENOSYS => format!("{what}: this kernel has no BPF support (CONFIG_BPF_SYSCALL)"),
        libc::ESRCH => format!("process {pid} exited before memleak could attach"),
        libc::ENOENT if what.contains("uprobe") => {
            format!("{what}: this kernel has no uprobe support (CONFIG_UPROBE_EVENTS)")
        }
        _ => return None,
    })
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.detach();
    }
}

/// The loaded BPF object and its attachments.
pub struct Probes {
    pub obj: Object,
    /// Attached through multi-uprobe links.
    multi: bool,
    /// The links of each traced process.
    links: Vec<LinkSet>,
    /// Links of processes that exited: closed at the end, in the
    /// background (see `detach_in_background`).
    retired: Vec<Link>,
}

/// The links probing one file for one process, and what they probe.
struct LinkSet {
    pid: i32,
    /// The file and the offsets probed: the same set is not attached twice.
    key: (PathBuf, Vec<u64>),
    /// Probes (not links: a multi-uprobe link has many).
    probes: usize,
    links: Vec<Link>,
}

/// What a set of allocator probes is attached to.
fn alloc_key(alloc: &Allocator) -> (PathBuf, Vec<u64>) {
    (
        // /lib and /usr/lib name the same files on merged-/usr systems.
        std::fs::canonicalize(&alloc.path).unwrap_or_else(|_| alloc.path.clone()),
        alloc.probes.iter().map(|p| p.file_offset).collect(),
    )
}

/// Closes links side by side: each waits for an RCU grace period (about
/// 0.1 s) in the kernel.
fn close_links(links: Vec<Link>) {
    if links.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let n = links.len();
    std::thread::scope(|s| {
        for l in links {
            s.spawn(move || drop(l));
        }
    });
    debug!("{n} probe links detached in {:?}", started.elapsed());
}

/// The map's initial value (its `.rodata` bytes before load).
///
/// libbpf-rs 0.27's `initial_value` passes a `u64` where libbpf writes a
/// `size_t`: on 32-bit big-endian targets (mips) the size reads as 0. Ask
/// libbpf directly with a `size_t`.
fn initial_value(m: &libbpf_rs::OpenMapMut<'_>) -> Vec<u8> {
    use libbpf_rs::libbpf_sys;
    use libbpf_rs::AsRawLibbpf;
    let mut size: libbpf_sys::size_t = 0;
    // SAFETY: the map pointer is valid for the life of `m`; libbpf returns
    // its own buffer of `size` bytes, copied out before `m` can change.
    unsafe {
        let ptr = libbpf_sys::bpf_map__initial_value(m.as_libbpf_object().as_ptr(), &mut size);
        if ptr.is_null() {
            return Vec::new();
        }
        std::slice::from_raw_parts(ptr.cast::<u8>(), size as usize).to_vec()
    }
}

/// What the loader decides beside the options.
pub struct LoadParams {
    /// The build of the programs for this kernel.
    pub variant: memleak_bpf::Variant,
    /// Bits of a code address (see `AnyUnwinder::code_address_mask`).
    pub pc_mask: u64,
    /// Attach through two multi-uprobe links (loads their two programs
    /// instead of the per-function ones).
    pub multi: bool,
}

/// Loads the object with `opts` applied. Nothing is attached yet.
pub fn load(opts: &Options, params: &LoadParams) -> Result<Object> {
    libbpf_rs::set_print(Some((PrintLevel::Debug, libbpf_log)));
    let mut builder = ObjectBuilder::default();
    builder.name("memleak").context("naming the BPF object")?;
    let mut open = builder
        .open_memory(params.variant.object())
        .context("opening the embedded BPF object")?;
    let cfg = Config {
        min_size: opts.min_size,
        max_size: opts.max_size,
        // Wake the reader at 1/8 of the ring; it also drains on a timer.
        wakeup_bytes: u64::from(opts.ringbuf_mb) << 17,
        pc_mask: params.pc_mask,
        stack_bytes: opts.stack_bytes,
        sample_rate: opts.sample_rate,
        max_frames: opts.max_frames as u32,
        verify: u32::from(opts.verify_unwind),
        trace: u32::from(opts.trace),
        sample_bytes: opts.sample_bytes,
    };
    for mut m in open.maps_mut() {
        let name = m.name().to_string_lossy().into_owned();
        if name.ends_with(map::RODATA) {
            let mut value = initial_value(&m);
            let bytes = cfg.as_bytes();
            if value.len() < bytes.len() {
                return Err(anyhow!(
                    "the BPF object's .rodata is {} bytes, expected at least {}",
                    value.len(),
                    bytes.len()
                ));
            }
            value[..bytes.len()].copy_from_slice(bytes);
            m.set_initial_value(&value)
                .context("configuring the BPF object")?;
        } else {
            let perf = params.variant.transport == memleak_bpf::Transport::PerfBuffer;
            let entries = match name.as_str() {
                // A perf event array gets one entry per CPU from libbpf.
                map::EVENTS if !perf => Some(opts.ringbuf_mb << 20),
                map::STAGING => {
                    Some(libbpf_rs::num_possible_cpus().context("counting the CPUs")? as u32)
                }
                map::ALLOCS => Some(opts.max_allocs),
                map::STACKS => Some(opts.max_stacks),
                map::DEEP_STACKS => Some((opts.max_stacks / 8).max(16)),
                map::RULES => Some(opts.max_rules),
                _ => None,
            };
            if let Some(n) = entries {
                m.set_max_entries(n)
                    .with_context(|| format!("sizing the BPF map `{name}`"))?;
            }
        }
    }
    for mut p in open.progs_mut() {
        let name = p.name().to_string_lossy().into_owned();
        let multi_prog = name == prog::ENTRY_MULTI || name == prog::RETURN_MULTI;
        let needed = match name.as_str() {
            prog::WALK_STACK | prog::LINK_CHANGE => true,
            prog::MMAP | prog::MUNMAP => opts.mmap && !params.multi,
            _ => multi_prog == params.multi,
        };
        if !needed {
            p.set_autoload(false);
        }
        // A tail call needs the caller's attach type (6.x kernels check).
        if params.multi && name == prog::WALK_STACK {
            p.set_attach_type(libbpf_rs::ProgramAttachType::TraceUprobeMulti);
        }
        // -vv: the verifier's statistics of each program (BPF_LOG_STATS:
        // "processed N insns ..."), through libbpf's log.
        if log::log_enabled!(log::Level::Debug) {
            p.set_log_level(4);
        }
    }
    let started = std::time::Instant::now();
    let loaded = open.load();
    if loaded.is_ok() {
        debug!("BPF object loaded and verified in {:?}", started.elapsed());
    }
    let obj = loaded.map_err(|e| {
        let errno = errno_of(&e);
        match explain(errno, "loading BPF programs", 0) {
            Some(msg) => anyhow!(msg),
            None => anyhow!("loading BPF programs failed: {e:#}"),
        }
    })?;
    // Every allocation entry tail-calls the stack walk through `walkers`.
    let walker = obj
        .progs()
        .find(|p| p.name() == prog::WALK_STACK)
        .ok_or_else(|| anyhow!("BPF program {} missing", prog::WALK_STACK))?;
    let walkers = obj
        .maps()
        .find(|m| m.name() == map::WALKERS)
        .ok_or_else(|| anyhow!("BPF map {} missing", map::WALKERS))?;
    use std::os::fd::AsRawFd;
    let fd = walker.as_fd().as_raw_fd() as u32;
    walkers
        .update(&0u32.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
        .context("installing the stack walk")?;
    if opts.sample_bytes > 0 {
        let gaps = obj
            .maps()
            .find(|m| m.name() == map::SAMPLE_GAPS)
            .ok_or_else(|| anyhow!("BPF map {} missing", map::SAMPLE_GAPS))?;
        for (i, g) in sample_gaps(opts.sample_bytes).iter().enumerate() {
            gaps.update(&(i as u32).to_ne_bytes(), &g.to_ne_bytes(), MapFlags::ANY)
                .context("filling the sampling gaps")?;
        }
    }
    Ok(obj)
}

/// `--sample-bytes N`: the gaps between sampled bytes the kernel draws
/// from, [`memleak_bpf::SAMPLE_GAPS`] quantiles of the exponential
/// distribution of mean N (the midpoints of equal-probability bins),
/// scaled so that their mean is N exactly.
pub fn sample_gaps(n: u32) -> Vec<u64> {
    let k = memleak_bpf::SAMPLE_GAPS;
    let raw: Vec<f64> = (0..k)
        .map(|i| -(1.0 - (i as f64 + 0.5) / k as f64).ln())
        .collect();
    let mean = raw.iter().sum::<f64>() / k as f64;
    raw.iter()
        .map(|q| ((q / mean) * f64::from(n)).round().max(1.0) as u64)
        .collect()
}

impl Probes {
    /// The loaded object, nothing attached yet; `multi`: as loaded with
    /// [`LoadParams::multi`].
    pub fn new(obj: Object, multi: bool) -> Probes {
        Probes {
            obj,
            multi,
            links: Vec::new(),
            retired: Vec::new(),
        }
    }

    /// The probes attached for `pid` at `key`, if that set exists.
    fn attached(&self, pid: i32, key: &(PathBuf, Vec<u64>)) -> Option<usize> {
        self.links
            .iter()
            .find(|s| s.pid == pid && &s.key == key)
            .map(|s| s.probes)
    }

    /// Whether `alloc` is probed for `pid` already (an exec into a program
    /// with the same allocator keeps its probes).
    pub fn has(&self, alloc: &Allocator, pid: i32) -> bool {
        self.attached(pid, &alloc_key(alloc)).is_some()
    }

    /// Attaches entry and return probes to every function of `alloc`, for
    /// `pid` only. Returns how many probes that is.
    pub fn attach(&mut self, alloc: &Allocator, pid: i32) -> Result<usize> {
        let key = alloc_key(alloc);
        if let Some(n) = self.attached(pid, &key) {
            return Ok(n);
        }
        let what = |symbol: &str, offset: u64| {
            format!(
                "attaching uprobe to {}:{symbol} (offset {offset:#x})",
                alloc.path.display()
            )
        };
        let failed = |what: String, e: libbpf_rs::Error| {
            match explain(errno_of(&e), &what, pid) {
            Some(msg) => anyhow!(msg),
            None if errno_of(&e) == Some(libc::EINVAL) => anyhow!(
                "{what}: invalid argument (another tool may be probing the same function with a different ref_ctr_offset; see dmesg)"
            ),
            None => anyhow!("{what}: {e:#}"),
        }
        };
        let find = |name: &str| {
            self.obj
                .progs_mut()
                .find(|p| p.name() == name)
                .ok_or_else(|| anyhow!("BPF program {name} missing"))
        };
        let has_return = |k: Kind| !matches!(k, Kind::Free | Kind::Munmap);
        let mut links = Vec::new();
        let mut count = 0;
        if self.multi {
            // One link for the entries, one for the returns, the kind in
            // each probe's cookie.
            let entries: Vec<_> = alloc.probes.iter().collect();
            let returns: Vec<_> = alloc.probes.iter().filter(|p| has_return(p.kind)).collect();
            for (program, points, ret) in [
                (prog::ENTRY_MULTI, entries, false),
                (prog::RETURN_MULTI, returns, true),
            ] {
                if points.is_empty() {
                    continue;
                }
                let opts = libbpf_rs::UprobeMultiOpts {
                    offsets: points.iter().map(|p| p.file_offset as usize).collect(),
                    cookies: points.iter().map(|p| u64::from(p.kind.raw())).collect(),
                    retprobe: ret,
                    ..Default::default()
                };
                let link = find(program)?
                    .attach_uprobe_multi_with_opts(pid, &alloc.path, "", opts)
                    .map_err(|e| {
                        let names: Vec<_> = points.iter().map(|p| p.symbol.as_str()).collect();
                        failed(
                            format!(
                                "attaching uprobes to {}:{{{}}}",
                                alloc.path.display(),
                                names.join(",")
                            ),
                            e,
                        )
                    })?;
                links.push(link);
                count += points.len();
            }
        } else {
            for point in &alloc.probes {
                let entry = find(point.kind.program())?;
                let attach = |p: &libbpf_rs::ProgramMut<'_>, ret: bool| -> Result<Link> {
                    p.attach_uprobe(ret, pid, &alloc.path, point.file_offset as usize)
                        .map_err(|e| failed(what(&point.symbol, point.file_offset), e))
                };
                links.push(attach(&entry, false)?);
                if has_return(point.kind) {
                    links.push(attach(&find(prog::ALLOC_RETURN)?, true)?);
                }
                count += 1 + usize::from(has_return(point.kind));
            }
        }
        for point in &alloc.probes {
            debug!("probing {} at {:#x}", point.symbol, point.file_offset);
        }
        info!(
            "attached {count} probes to {} for pid {pid} ({} links)",
            alloc.path.display(),
            links.len()
        );
        self.links.push(LinkSet {
            pid,
            key,
            probes: count,
            links,
        });
        Ok(count)
    }

    /// Probes the dynamic linker's `_dl_debug_state` for `pid`: before a
    /// dlclose unmaps anything, the kernel sends the loaded objects.
    pub fn attach_linker(&mut self, linker: &crate::linker::Linker, pid: i32) -> Result<()> {
        let key = (linker.path.clone(), vec![linker.debug_state_offset]);
        if self.attached(pid, &key).is_some() {
            return Ok(());
        }
        let program = self
            .obj
            .progs_mut()
            .find(|p| p.name() == prog::LINK_CHANGE)
            .ok_or_else(|| anyhow!("BPF program {} missing", prog::LINK_CHANGE))?;
        let link = program
            .attach_uprobe(false, pid, &linker.path, linker.debug_state_offset as usize)
            .with_context(|| {
                format!(
                    "attaching uprobe to {}:_dl_debug_state",
                    linker.path.display()
                )
            })?;
        self.links.push(LinkSet {
            pid,
            key,
            probes: 1,
            links: vec![link],
        });
        debug!(
            "watching the dynamic linker {} of pid {pid}",
            linker.path.display()
        );
        Ok(())
    }

    /// Takes the link sets of `pid` out.
    fn take_pid(&mut self, pid: i32) -> Vec<Link> {
        let (gone, kept): (Vec<LinkSet>, Vec<LinkSet>) = std::mem::take(&mut self.links)
            .into_iter()
            .partition(|s| s.pid == pid);
        self.links = kept;
        gone.into_iter().flat_map(|s| s.links).collect()
    }

    /// Detaches the probes of `pid` now (exec into another allocator: the
    /// old probes must not fire for the new image).
    pub fn detach_pid(&mut self, pid: i32) {
        let links = self.take_pid(pid);
        close_links(links);
    }

    /// The probes of `pid`, which exited, can never fire again: they are
    /// closed at the end, with the others, without waiting.
    pub fn release_pid(&mut self, pid: i32) {
        let links = self.take_pid(pid);
        self.retired.extend(links);
    }

    /// Detaches every probe without waiting for the kernel: a child
    /// process holds the links until memleak has exited, then exits, and
    /// the kernel releases them in its exit. Each release waits for an RCU
    /// grace period, one link after the other (20 single uprobe links take
    /// 2 s); nobody needs to wait for that. Two multi-uprobe links are
    /// simply closed.
    pub fn detach_in_background(mut self) {
        let links: usize =
            self.retired.len() + self.links.iter().map(|s| s.links.len()).sum::<usize>();
        if links <= 2 {
            return self.detach();
        }
        let Ok((rd, wr)) = nix::unistd::pipe() else {
            return self.detach();
        };
        // SAFETY: the child makes only async-signal-safe calls (close,
        // setsid, read, _exit): memleak has other threads.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                use std::os::fd::AsRawFd;
                // SAFETY: plain system calls on descriptors this process owns.
                unsafe {
                    libc::close(wr.as_raw_fd());
                    for fd in 0..3 {
                        libc::close(fd);
                    }
                    libc::setsid();
                    // Until memleak is gone (end of file on the pipe): its
                    // exit only drops its references to the links.
                    let mut b = 0u8;
                    loop {
                        let n = libc::read(rd.as_raw_fd(), (&raw mut b).cast(), 1);
                        if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
                            break;
                        }
                    }
                    libc::_exit(0);
                }
            }
            Ok(nix::unistd::ForkResult::Parent { .. }) => {
                drop(rd);
                // Open until memleak exits.
                std::mem::forget(wr);
                // The child holds references: closing here is quick.
                let started = std::time::Instant::now();
                self.links.clear();
                self.retired.clear();
                debug!(
                    "{links} probe links handed to a child process to release, in {:?}",
                    started.elapsed()
                );
            }
            Err(e) => {
                debug!("fork: {e}; detaching in place");
                self.detach();
            }
        }
    }

    /// Detaches every probe.
    pub fn detach(&mut self) {
        let mut links = std::mem::take(&mut self.retired);
        links.extend(
            std::mem::take(&mut self.links)
                .into_iter()
                .flat_map(|s| s.links),
        );
        close_links(links);
    }

    /// Sum of each per-CPU counter.
    pub fn counters(&self) -> [u64; Counter::ALL.len()] {
        let mut out = [0u64; Counter::ALL.len()];
        let Some(m) = self.obj.maps().find(|m| m.name() == map::COUNTERS) else {
            return out;
        };
        for c in Counter::ALL {
            let key = (c as u32).to_ne_bytes();
            if let Ok(Some(per_cpu)) = m.lookup_percpu(&key, MapFlags::ANY) {
                out[c as usize] = per_cpu
                    .iter()
                    .filter_map(|v| {
                        v.get(..8)
                            .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
                    })
                    .sum();
            }
        }
        out
    }

    /// Runs of our programs the kernel skipped (`recursion_misses`), summed.
    pub fn prog_misses(&self) -> u64 {
        let mut total = 0;
        for p in self.obj.progs() {
            let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
            let mut len = std::mem::size_of_val(&info) as u32;
            let fd = p.as_fd();
            use std::os::fd::AsRawFd;
            // SAFETY: info is a plain struct of the size passed in.
            let rc = unsafe {
                libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(
                    fd.as_raw_fd(),
                    (&mut info as *mut libbpf_rs::libbpf_sys::bpf_prog_info).cast(),
                    &mut len,
                )
            };
            if rc == 0 {
                total += info.recursion_misses;
            }
        }
        total
    }
}

/// The oldest kernel memleak's BPF programs load on (measured: 5.3 and 5.4
/// pass every check; 4.18 refuses the global data of the BPF object).
const KERNEL_FLOOR: (u32, u32) = (5, 3);

fn kernel_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
}

/// `major.minor` of a kernel release such as `5.10.0-32-arm64`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Checks the kernel and privileges before loading, for clear errors.
pub fn preflight() -> Result<()> {
    if !Path::new("/proc/sys/kernel/unprivileged_bpf_disabled").exists()
        && !Path::new("/sys/fs/bpf").exists()
    {
        return Err(anyhow!(
            "this kernel has no BPF support (CONFIG_BPF_SYSCALL is not set)"
        ));
    }
    if let Some(release) = kernel_release() {
        if let Some(v) = parse_release(&release).filter(|&v| v < KERNEL_FLOOR) {
            return Err(anyhow!(
                "this kernel ({release}) is too old: memleak needs Linux {}.{} or later \
                 (BPF global data came in 5.2, bounded loops in 5.3; found {}.{})",
                KERNEL_FLOOR.0,
                KERNEL_FLOOR.1,
                v.0,
                v.1
            ));
        }
    }
    let uprobes = [
        "/sys/bus/event_source/devices/uprobe/type",
        "/sys/kernel/tracing/uprobe_events",
        "/sys/kernel/debug/tracing/uprobe_events",
    ];
    if !uprobes.iter().any(|p| Path::new(p).exists()) {
        // BPF_EVENTS has no prompt of its own: it is on whenever uprobe (or
        // kprobe) events are, so a kernel without it lacks uprobe events.
        return Err(anyhow!(
            "this kernel has no uprobe events for BPF: enable CONFIG_UPROBE_EVENTS, which \
             brings CONFIG_BPF_EVENTS (on OpenWrt: KERNEL_BPF_EVENTS and CONFIG_UPROBE_EVENTS)"
        ));
    }
    // CapEff bits: CAP_SYS_ADMIN 21, CAP_PERFMON 38, CAP_BPF 39.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
    if let Some(caps) = cap_eff {
        let has = |bit: u32| caps & (1u64 << bit) != 0;
        if !(has(21) || (has(38) && has(39))) {
            return Err(anyhow!(
                "memleak needs root, or CAP_BPF and CAP_PERFMON (on kernels without multi-uprobe \
                 links, before 6.6: CAP_SYS_ADMIN), plus CAP_SYS_PTRACE for -p of another \
                 user's process (run it with sudo)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sample_gaps;

    #[test]
    fn sampling_gaps_are_exponential_quantiles_of_mean_n() {
        let n = 65536u32;
        let g = sample_gaps(n);
        assert_eq!(g.len(), memleak_bpf::SAMPLE_GAPS);
        let mean = g.iter().sum::<u64>() as f64 / g.len() as f64;
        assert!((mean / f64::from(n) - 1.0).abs() < 1e-4, "mean {mean}");
        assert!(g.windows(2).all(|w| w[0] <= w[1]));
        // The median of an exponential is N ln 2.
        let median = g[g.len() / 2] as f64 / f64::from(n);
        assert!((median - std::f64::consts::LN_2).abs() < 0.01, "{median}");
        assert!(sample_gaps(1).iter().all(|&x| x >= 1));
    }

    use super::*;

    #[test]
    fn kernel_releases() {
        assert_eq!(parse_release("4.18.0-25-generic"), Some((4, 18)));
        assert_eq!(parse_release("5.10.0-32-arm64"), Some((5, 10)));
        assert_eq!(parse_release("6.12.95+deb12-amd64"), Some((6, 12)));
        assert_eq!(parse_release("5.3"), Some((5, 3)));
        assert_eq!(parse_release("weird"), None);
        assert!(parse_release("5.2.21").unwrap() < KERNEL_FLOOR);
        assert!(parse_release("5.3.0-76-generic").unwrap() >= KERNEL_FLOOR);
    }
}
