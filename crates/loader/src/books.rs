//! The books the kernel keeps: outstanding blocks (`allocs`, `mmaps`), the
//! stacks it walked (`stacks`) and the rule cache user space fills (`rules`).
//! Read when a report is due (batched where the kernel has batch lookups,
//! 5.6+), written only for rules and for munmaps the kernel hands over.

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{anyhow, Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle, Object};
use log::debug;
use memleak_bpf::{map, AllocInfo, AllocKey, KStack, Pod, RawRule, RuleKey};

/// Heap blocks or mmap regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// malloc and friends.
    Heap,
    /// mmap regions (`--mmap`).
    Mmap,
}

/// Handles on the kernel's maps.
pub struct Books {
    allocs: MapHandle,
    mmaps: MapHandle,
    stacks: MapHandle,
    deep_stacks: MapHandle,
    rules: MapHandle,
    copy_ends: MapHandle,
    r_debugs: MapHandle,
}

fn handle(obj: &Object, name: &str) -> Result<MapHandle> {
    let m = obj
        .maps()
        .find(|m| m.name() == name)
        .ok_or_else(|| anyhow!("BPF map `{name}` missing"))?;
    MapHandle::try_from(&m).with_context(|| format!("BPF map `{name}`"))
}

/// Calls `f` with every (key, value) of a hash map.
fn for_each(m: &MapHandle, mut f: impl FnMut(&[u8], &[u8])) -> Result<()> {
    if read_batched(m, &mut f)? {
        return Ok(());
    }
    // No batch operations (kernels before 5.6): key by key. Keys deleted
    // meanwhile may restart the walk: skip repeats.
    let mut seen = HashSet::new();
    for k in m.keys() {
        if !seen.insert(k.clone()) {
            continue;
        }
        if let Some(v) = m.lookup(&k, MapFlags::ANY).context("reading a BPF map")? {
            f(&k, &v);
        }
    }
    Ok(())
}

/// Batched lookups; `false` (nothing read) when the kernel has none for
/// this map.
fn read_batched(m: &MapHandle, f: &mut impl FnMut(&[u8], &[u8])) -> Result<bool> {
    use libbpf_rs::libbpf_sys;
    let (ks, vs) = (m.key_size() as usize, m.value_size() as usize);
    let mut count: u32 = 4096;
    let mut first = true;
    let mut in_batch: Option<Vec<u8>> = None;
    let mut out_batch = vec![0u8; ks.max(4)];
    let opts = libbpf_sys::bpf_map_batch_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
        ..Default::default()
    };
    let mut keys = Vec::new();
    let mut values = Vec::new();
    loop {
        keys.resize(count as usize * ks, 0);
        values.resize(count as usize * vs, 0);
        let mut n = count;
        // SAFETY: the buffers hold `count` keys and values of the map's
        // sizes; in/out batch tokens are key-sized (at least 4 bytes).
        let ret = unsafe {
            libbpf_sys::bpf_map_lookup_batch(
                m.as_fd().as_raw_fd(),
                in_batch
                    .as_mut()
                    .map_or(std::ptr::null_mut(), |b| b.as_mut_ptr().cast()),
                out_batch.as_mut_ptr().cast(),
                keys.as_mut_ptr().cast(),
                values.as_mut_ptr().cast(),
                &mut n,
                &opts,
            )
        };
        let errno = if ret < 0 { -ret } else { 0 };
        if errno == libc::ENOSPC && n == 0 {
            // A bucket holds more than `count` entries.
            count = count
                .checked_mul(2)
                .ok_or_else(|| anyhow!("batch too large"))?;
            continue;
        }
        if errno != 0 && errno != libc::ENOENT {
            if first && [libc::EINVAL, libc::ENOTSUP, 524].contains(&errno) {
                debug!("no batched lookups ({errno}): reading key by key");
                return Ok(false);
            }
            return Err(anyhow!(
                "reading a BPF map: {}",
                std::io::Error::from_raw_os_error(errno)
            ));
        }
        first = false;
        for i in 0..n.min(count) as usize {
            f(&keys[i * ks..(i + 1) * ks], &values[i * vs..(i + 1) * vs]);
        }
        if errno == libc::ENOENT {
            return Ok(true);
        }
        in_batch = Some(out_batch.clone());
    }
}

impl Books {
    /// The books of a loaded object.
    pub fn new(obj: &Object) -> Result<Books> {
        Ok(Books {
            allocs: handle(obj, map::ALLOCS)?,
            mmaps: handle(obj, map::MMAPS)?,
            stacks: handle(obj, map::STACKS)?,
            deep_stacks: handle(obj, map::DEEP_STACKS)?,
            rules: handle(obj, map::RULES)?,
            copy_ends: handle(obj, map::COPY_ENDS)?,
            r_debugs: handle(obj, map::R_DEBUGS)?,
        })
    }

    fn blocks_map(&self, c: Category) -> &MapHandle {
        match c {
            Category::Heap => &self.allocs,
            Category::Mmap => &self.mmaps,
        }
    }

    /// The outstanding blocks of process `tgid`: address and what is known.
    pub fn blocks(&self, c: Category, tgid: u32) -> Result<Vec<(u64, AllocInfo)>> {
        let mut v = Vec::new();
        for_each(self.blocks_map(c), |k, val| {
            if let (Some(k), Some(val)) = (AllocKey::from_bytes(k), AllocInfo::from_bytes(val)) {
                if k.tgid == tgid {
                    v.push((k.addr, val));
                }
            }
        })?;
        Ok(v)
    }

    /// The stack the kernel stored under `id`.
    pub fn stack(&self, id: u64) -> Option<KStack> {
        let key = id.to_ne_bytes();
        let v = match self.stacks.lookup(&key, MapFlags::ANY) {
            Ok(Some(v)) => v,
            _ => self.deep_stacks.lookup(&key, MapFlags::ANY).ok()??,
        };
        KStack::from_prefix(&v)
    }

    /// Caches a rule.
    pub fn insert_rule(&self, key: &RuleKey, rule: &RawRule) -> Result<()> {
        self.rules
            .update(key.as_bytes(), rule.as_bytes(), MapFlags::ANY)
            .context("caching an unwind rule")
    }

    /// Lets thread `tid`'s stack copies stop at `end` (just above its
    /// outermost frame).
    pub fn set_copy_end(&self, tid: u32, end: u64) {
        if let Err(e) = self
            .copy_ends
            .update(&tid.to_ne_bytes(), &end.to_ne_bytes(), MapFlags::ANY)
        {
            debug!("copy end of thread {tid}: {e:#}");
        }
    }

    /// Drops the books of process `tgid` (its image was replaced by exec):
    /// returns the bytes and blocks dropped from the heap's books.
    pub fn forget_process(&self, tgid: u32) -> Result<(u64, u64)> {
        let mut dropped = (0, 0);
        for c in [Category::Heap, Category::Mmap] {
            for (addr, info) in self.blocks(c, tgid)? {
                let key = AllocKey {
                    addr,
                    tgid,
                    _pad: 0,
                };
                let _ = self.blocks_map(c).delete(key.as_bytes());
                if c == Category::Heap {
                    dropped.0 += info.size;
                    dropped.1 += 1;
                }
            }
        }
        Ok(dropped)
    }

    /// Tells the kernel where process `tgid`'s `_r_debug` is (0: nowhere).
    pub fn set_r_debug(&self, tgid: u32, addr: u64) -> Result<()> {
        if addr == 0 {
            let _ = self.r_debugs.delete(&tgid.to_ne_bytes());
            return Ok(());
        }
        self.r_debugs
            .update(&tgid.to_ne_bytes(), &addr.to_ne_bytes(), MapFlags::ANY)
            .context("noting the dynamic linker's list")
    }

    /// Forgets thread `tid`'s copy end.
    pub fn delete_copy_end(&self, tid: u32) {
        let _ = self.copy_ends.delete(&tid.to_ne_bytes());
    }

    /// Forgets a rule (its code was unmapped).
    pub fn delete_rule(&self, key: &RuleKey) {
        let _ = self.rules.delete(key.as_bytes());
    }

    /// Applies `munmap(addr, len)` of process `tgid` at time `ts_ns` to the
    /// mmap regions: those it covers go, those it cuts are trimmed or split.
    /// Regions mapped after the munmap are left alone.
    pub fn apply_munmap(&self, tgid: u32, addr: u64, len: u64, ts_ns: u64) -> Result<()> {
        let end = addr.saturating_add(len);
        for (start, r) in self.blocks(Category::Mmap, tgid)? {
            let r_end = start.saturating_add(r.size);
            if r.ts_ns > ts_ns || start >= end || r_end <= addr {
                continue;
            }
            let key = |a: u64| AllocKey {
                addr: a,
                tgid,
                _pad: 0,
            };
            let _ = self.mmaps.delete(key(start).as_bytes());
            let head = (start < addr).then(|| (start, addr - start));
            let tail = (r_end > end).then(|| (end, r_end - end));
            for (a, size) in head.into_iter().chain(tail) {
                {
                    let piece = AllocInfo { size, ..r };
                    self.mmaps
                        .update(key(a).as_bytes(), piece.as_bytes(), MapFlags::ANY)
                        .context("splitting an mmap region")?;
                }
            }
        }
        Ok(())
    }
}
