//! What the running kernel offers, probed at start-up (libbpf's feature
//! probes load tiny programs and maps), and the BPF variant chosen from it.

use anyhow::{bail, Result};
use libbpf_rs::libbpf_sys;
use log::info;
use memleak_bpf::{Transport, UserRead, Variant};

/// A choice the user may force (`auto` probes the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice<T> {
    /// What the kernel supports best.
    Auto,
    /// This one.
    Forced(T),
}

/// The kernel's relevant features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// BPF programs of the kprobe/uprobe type load (CONFIG_BPF_EVENTS).
    pub uprobe_programs: bool,
    /// `BPF_MAP_TYPE_RINGBUF` (5.8).
    pub ring_buffer: bool,
    /// `bpf_probe_read_user` (5.5).
    pub probe_read_user: bool,
    /// `BPF_MAP_TYPE_PERF_EVENT_ARRAY`.
    pub perf_buffer: bool,
    /// Multi-uprobe links that filter by process (6.6+, fixed in 6.9 and
    /// stable kernels: the first ones filtered by thread).
    pub uprobe_multi: bool,
}

fn yes(rc: i32) -> bool {
    rc > 0
}

/// libbpf's probe for multi-uprobe links: creating one in the binary "/"
/// fails with EBADF where they exist, and one for PID -1 fails early with
/// EINVAL where they filter by process.
fn probe_uprobe_multi() -> bool {
    // mov r0, 0; exit
    let mut insns = [libbpf_sys::bpf_insn::default(); 2];
    insns[0].code = 0xb7;
    insns[1].code = 0x95;
    let mut load = libbpf_sys::bpf_prog_load_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_prog_load_opts>() as _,
        expected_attach_type: libbpf_sys::BPF_TRACE_UPROBE_MULTI,
        ..Default::default()
    };
    // SAFETY: valid instructions, a NUL-terminated license and sized options.
    let prog = unsafe {
        libbpf_sys::bpf_prog_load(
            libbpf_sys::BPF_PROG_TYPE_KPROBE,
            std::ptr::null(),
            c"GPL".as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            &mut load,
        )
    };
    if prog < 0 {
        return false;
    }
    let offset: std::os::raw::c_ulong = 0;
    let link = |pid: u32| {
        let mut opts = libbpf_sys::bpf_link_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _,
            ..Default::default()
        };
        // SAFETY: writing the union's variant this attach type reads.
        unsafe {
            let m = &mut opts.__bindgen_anon_1.uprobe_multi;
            m.path = c"/".as_ptr();
            m.offsets = &offset;
            m.cnt = 1;
            m.pid = pid;
        }
        // SAFETY: a loaded program and options that outlive the call.
        let fd = unsafe {
            libbpf_sys::bpf_link_create(prog, -1, libbpf_sys::BPF_TRACE_UPROBE_MULTI, &opts)
        };
        if fd >= 0 {
            // SAFETY: closing the link just created.
            unsafe { libc::close(fd) };
        }
        fd
    };
    let ok = link(0) == -libc::EBADF && link(u32::MAX) == -libc::EINVAL;
    // SAFETY: closing the program loaded above.
    unsafe { libc::close(prog) };
    ok
}

impl Features {
    /// Probes the running kernel.
    pub fn probe() -> Features {
        // SAFETY: libbpf's probes take plain enum values and no options.
        unsafe {
            Features {
                uprobe_programs: yes(libbpf_sys::libbpf_probe_bpf_prog_type(
                    libbpf_sys::BPF_PROG_TYPE_KPROBE,
                    std::ptr::null(),
                )),
                ring_buffer: yes(libbpf_sys::libbpf_probe_bpf_map_type(
                    libbpf_sys::BPF_MAP_TYPE_RINGBUF,
                    std::ptr::null(),
                )),
                probe_read_user: yes(libbpf_sys::libbpf_probe_bpf_helper(
                    libbpf_sys::BPF_PROG_TYPE_KPROBE,
                    libbpf_sys::BPF_FUNC_probe_read_user,
                    std::ptr::null(),
                )),
                perf_buffer: yes(libbpf_sys::libbpf_probe_bpf_map_type(
                    libbpf_sys::BPF_MAP_TYPE_PERF_EVENT_ARRAY,
                    std::ptr::null(),
                )),
                uprobe_multi: probe_uprobe_multi(),
            }
        }
    }

    /// The variant to load: the best the kernel has, or what was forced
    /// (refused when the kernel lacks it).
    pub fn choose(&self, transport: Choice<Transport>, read: Choice<UserRead>) -> Result<Variant> {
        if !self.uprobe_programs {
            bail!(
                "this kernel cannot run BPF programs on uprobes (enable CONFIG_BPF_EVENTS; \
                 on OpenWrt: KERNEL_BPF_EVENTS)"
            );
        }
        let transport = match transport {
            Choice::Auto if self.ring_buffer => Transport::RingBuffer,
            Choice::Auto | Choice::Forced(Transport::PerfBuffer) => {
                if !self.perf_buffer {
                    bail!("this kernel has neither BPF ring buffers nor perf event arrays (CONFIG_PERF_EVENTS)");
                }
                Transport::PerfBuffer
            }
            Choice::Forced(Transport::RingBuffer) => {
                if !self.ring_buffer {
                    bail!("this kernel has no BPF ring buffer (Linux 5.8+); use --events perfbuf");
                }
                Transport::RingBuffer
            }
        };
        let read = match read {
            Choice::Auto if self.probe_read_user => UserRead::ProbeReadUser,
            Choice::Auto | Choice::Forced(UserRead::ProbeRead) => UserRead::ProbeRead,
            Choice::Forced(UserRead::ProbeReadUser) => {
                if !self.probe_read_user {
                    bail!("this kernel has no bpf_probe_read_user (Linux 5.5+); use --read-helper legacy");
                }
                UserRead::ProbeReadUser
            }
        };
        let v = Variant::new(transport, read);
        info!("kernel: {self:?}; using {v}");
        Ok(v)
    }
}

impl Features {
    /// Whether to attach through two multi-uprobe links: where the kernel
    /// has them, or as forced (refused when it lacks them).
    pub fn choose_multi(&self, attach: Choice<bool>) -> Result<bool> {
        match attach {
            Choice::Auto => Ok(self.uprobe_multi),
            Choice::Forced(false) => Ok(false),
            Choice::Forced(true) if self.uprobe_multi => Ok(true),
            Choice::Forced(true) => bail!(
                "this kernel has no multi-uprobe links that filter by process (Linux 6.6+); \
                 use --attach single"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Features = Features {
        uprobe_programs: true,
        ring_buffer: true,
        probe_read_user: true,
        perf_buffer: true,
        uprobe_multi: true,
    };

    #[test]
    fn picks_the_best_or_the_forced_fallback() {
        let v = ALL.choose(Choice::Auto, Choice::Auto).unwrap();
        assert_eq!(
            v,
            Variant::new(Transport::RingBuffer, UserRead::ProbeReadUser)
        );
        let v = ALL
            .choose(
                Choice::Forced(Transport::PerfBuffer),
                Choice::Forced(UserRead::ProbeRead),
            )
            .unwrap();
        assert_eq!(v, Variant::new(Transport::PerfBuffer, UserRead::ProbeRead));
        let old = Features {
            ring_buffer: false,
            probe_read_user: false,
            ..ALL
        };
        let v = old.choose(Choice::Auto, Choice::Auto).unwrap();
        assert_eq!(v, Variant::new(Transport::PerfBuffer, UserRead::ProbeRead));
    }

    #[test]
    fn refuses_what_the_kernel_lacks_with_the_config_option() {
        let old = Features {
            ring_buffer: false,
            probe_read_user: false,
            ..ALL
        };
        let e = old
            .choose(Choice::Forced(Transport::RingBuffer), Choice::Auto)
            .unwrap_err();
        assert!(format!("{e}").contains("5.8"), "{e}");
        let e = old
            .choose(Choice::Auto, Choice::Forced(UserRead::ProbeReadUser))
            .unwrap_err();
        assert!(format!("{e}").contains("5.5"), "{e}");
        let none = Features {
            uprobe_programs: false,
            ..ALL
        };
        let e = none.choose(Choice::Auto, Choice::Auto).unwrap_err();
        assert!(format!("{e}").contains("CONFIG_BPF_EVENTS"), "{e}");
    }
}
