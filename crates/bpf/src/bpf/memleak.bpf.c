// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * memleak's allocator probes.
 *
 * Built with clang for bpfel or bpfeb with no BTF of the kernel, no CO-RE and
 * no vmlinux.h: the only kernel type read is `struct pt_regs`, laid out by hand
 * per architecture below. The object's own BTF (clang -g) only describes its
 * maps, which every kernel with BPF_SYSCALL can load.
 *
 * The books are kept here: at an allocator's entry the probe walks the
 * caller's stack with the compact unwind rules user space cached in `rules`
 * (the first step uses the ABI's rule at a function's entry, so the caller is
 * never lost), stores the stack once in `stacks` and remembers its id per
 * thread; the return probe puts the block into `allocs`; free, munmap and
 * realloc take blocks out. Only a walk that meets a PC without a rule sends
 * anything to user space: a copy of the stack (EV_MISS), which user space
 * unwinds with DWARF CFI before filling the rules of that chain.
 *
 * Kernels 5.8+ (ring buffer, bpf_probe_read_user), or 5.3+ built with
 * MEMLEAK_PERFBUF (perf event array) and, before 5.5, MEMLEAK_LEGACY_READ
 * (bpf_probe_read): bounded loops, no atomics with fetch, no bpf_loop, no
 * kfuncs; every map is preallocated (or LRU).
 */
#include "memleak.h"

typedef unsigned char __u8;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef int __s32;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __always_inline inline __attribute__((always_inline))

/* Allocator calls nested in one another on a thread; more means a lost return. */
#define MAX_NESTING 16

/* Record classes for copies up to a known stack end. */
#define TINY_STACK 1024
#define SMALL_STACK 2048
#define MEDIUM_STACK 4096

/* Helper numbers are part of the kernel ABI (include/uapi/linux/bpf.h). */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static __u32 (*bpf_get_prandom_u32)(void) = (void *)7;
static __u32 (*bpf_get_smp_processor_id)(void) = (void *)8;
static long (*bpf_tail_call)(void *ctx, void *prog_array_map, __u32 index) = (void *)12;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static __u64 (*bpf_get_attach_cookie)(void *ctx) = (void *)174; /* 5.15; used on 6.6+ only */
#ifdef MEMLEAK_LEGACY_READ
/* Kernels before 5.5: bpf_probe_read reads user memory on the
 * architectures memleak supports (they have no separate user address space
 * checks that it would miss). */
static long (*bpf_probe_read_user)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)4;
static long (*bpf_probe_read_user_str)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)45;
#else
static long (*bpf_probe_read_user)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)112;
static long (*bpf_probe_read_user_str)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)114;
#endif
#ifdef MEMLEAK_PERFBUF
static long (*bpf_perf_event_output)(void *ctx, void *map, __u64 flags, void *data,
				     __u64 size) = (void *)25;
#else
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;
static __u64 (*bpf_ringbuf_query)(void *ringbuf, __u64 flags) = (void *)134;
#endif

#define BPF_RB_NO_WAKEUP 1
#define BPF_RB_FORCE_WAKEUP 2
#define BPF_RB_AVAIL_DATA 0
#define BPF_RB_RING_SIZE 1

#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PROG_ARRAY 3
#define BPF_MAP_TYPE_PERF_EVENT_ARRAY 4
#define BPF_F_CURRENT_CPU 0xffffffffULL
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_RINGBUF 27
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_ANY 0
#define BPF_NOEXIST 1
#define EEXIST 17

/*
 * struct pt_regs of each architecture, as the kernel lays it out. Only the
 * registers read here are named; the psABI register roles are cited in
 * crates/unwind-arch/src/<arch>/regs.rs.
 */
#if defined(__TARGET_ARCH_x86)
/* arch/x86/include/asm/ptrace.h (x86_64) */
struct pt_regs {
	__u64 r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax, ip, cs,
		flags, sp, ss;
};
#define REG_ARG0(r) ((r)->di)
#define REG_ARG1(r) ((r)->si)
#define REG_ARG2(r) ((r)->dx)
#define REG_RET(r) ((r)->ax)
#define REG_PC(r) ((r)->ip)
#define REG_SP(r) ((r)->sp)
#define REG_FP(r) ((r)->bp)
#define REG_RA(r) (0)
typedef __u64 ureg;
#elif defined(__TARGET_ARCH_arm64)
/* arch/arm64/include/asm/ptrace.h: struct user_pt_regs comes first */
struct pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};
#define REG_ARG0(r) ((r)->regs[0])
#define REG_ARG1(r) ((r)->regs[1])
#define REG_ARG2(r) ((r)->regs[2])
#define REG_RET(r) ((r)->regs[0])
#define REG_PC(r) ((r)->pc)
#define REG_SP(r) ((r)->sp)
#define REG_FP(r) ((r)->regs[29])
#define REG_RA(r) ((r)->regs[30])
typedef __u64 ureg;
#elif defined(__TARGET_ARCH_mips)
/* arch/mips/include/asm/ptrace.h, CONFIG_32BIT, o32, no SMARTMIPS/OCTEON */
struct pt_regs {
	__u32 pad0[8];
	__u32 regs[32];
	__u32 cp0_status, hi, lo, cp0_badvaddr, cp0_cause, cp0_epc;
};
#define REG_ARG0(r) ((r)->regs[4])
#define REG_ARG1(r) ((r)->regs[5])
#define REG_ARG2(r) ((r)->regs[6])
#define REG_RET(r) ((r)->regs[2])
#define REG_PC(r) ((r)->cp0_epc)
#define REG_SP(r) ((r)->regs[29])
#define REG_FP(r) ((r)->regs[30])
#define REG_RA(r) ((r)->regs[31])
typedef __u32 ureg;
#else
#error "define __TARGET_ARCH_x86, __TARGET_ARCH_arm64 or __TARGET_ARCH_mips"
#endif

/* Set by the loader before load; read-only afterwards, so the verifier sees constants. */
const volatile struct config cfg = {
	.min_size = 0,
	.max_size = ~0ULL,
	.wakeup_bytes = 1 << 18,
	.pc_mask = ~0ULL,
	.stack_bytes = 8192,
	.sample_rate = 1,
	.max_frames = 64,
	.verify = 0,
	.trace = 0,
	.sample_bytes = 0,
};

/* Per-thread state between an allocator's entry and its return. */
struct thread_state {
	__u64 entry_sp;  /* sp at the outermost entry: tells nesting from a lost return */
	__u64 memptr;    /* posix_memalign's out pointer */
	__u64 size;
	__u64 old_ptr;   /* realloc's block */
	__u64 stack_id;
	__u64 ts_ns;
	__u64 stack_end; /* first unreadable address above this thread's sp, once seen */
	__u32 depth;     /* allocator calls in progress on this thread */
	__u32 kind;
	__u32 tracked;   /* 1: the block goes into the books (not filtered or sampled out) */
	__u32 sample_ctr; /* allocations seen on this thread, for --sample-rate */
	__u64 bytes_left; /* --sample-bytes: bytes to go before the next sampled one (0: none drawn) */
};

/* --sample-bytes: gaps between sampled bytes (see SAMPLE_GAPS). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SAMPLE_GAPS);
	__type(key, __u32);
	__type(value, __u64);
} sample_gaps SEC(".maps");

/* The gap to the next sampled byte: one of the quantiles, at random. */
static __always_inline __u64 next_gap(void)
{
	__u32 i = bpf_get_prandom_u32() & (SAMPLE_GAPS - 1);
	__u64 *g = bpf_map_lookup_elem(&sample_gaps, &i);

	return g && *g ? *g : cfg.sample_bytes;
}

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH); /* exited threads age out */
	__uint(max_entries, 4096); /* threads */
	__type(key, __u32);
	__type(value, struct thread_state);
} threads SEC(".maps");

/* The books: outstanding heap blocks ... */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072); /* the loader sets --max-allocs */
	__type(key, struct alloc_key);
	__type(value, struct alloc_info);
} allocs SEC(".maps");

/* ... and mmap regions (--mmap). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct alloc_key);
	__type(value, struct alloc_info);
} mmaps SEC(".maps");

/* Stacks the kernel walked, by id: those of up to KSTACK_SHORT frames (most
 * of them) in `stacks`, whose values hold just that prefix of struct
 * kstack; deeper ones in `deep_stacks`. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096); /* the loader sets --max-stacks */
	__type(key, __u64);
	__type(value, struct kstack_short);
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512); /* the loader sets --max-stacks / 8 */
	__type(key, __u64);
	__type(value, struct kstack);
} deep_stacks SEC(".maps");

/* The rule cache user space fills: (process, pc) -> how to find the caller. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192); /* the loader sets --max-rules */
	__type(key, struct rule_key);
	__type(value, struct unwind_rule);
} rules SEC(".maps");

#ifdef MEMLEAK_PERFBUF
/* Kernels without BPF ring buffers (before 5.8): a perf event array, fed
 * from a per-CPU staging buffer (the loader sizes it to the CPUs). */
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

#define STAGING_BYTES (sizeof(struct stack_event) + MAX_STACK_BYTES + COPY_CHUNK)
struct staging_buf {
	unsigned char data[STAGING_BYTES];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); /* the loader sets the number of CPUs */
	__type(key, __u32);
	__type(value, struct staging_buf);
} staging SEC(".maps");
#else
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 << 20); /* the loader may resize */
} events SEC(".maps");
#endif

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Where each thread's copies may stop: just above its outermost frame,
 * learnt by user space from a complete unwind. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} copy_ends SEC(".maps");

/* Per traced process with a dynamic linker: the address of its _r_debug
 * (struct r_debug, <link.h>), set by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} r_debugs SEC(".maps");

/* walk_stack, tail-called by the allocator entries (filled by the loader). */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} walkers SEC(".maps");

/* Per-CPU room for a stack being walked (too big for the BPF stack), and
 * the arguments of walk_stack. */
struct scratch {
	struct kstack st;
	__u64 miss_seq;
	__u64 regs[NR_REGS]; /* in: pc, sp, fp, ra at the allocator's entry */
	__u64 stack_end;     /* in/out: the thread's stack end, once learnt */
	__u32 tgid, tid;     /* in */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

static __always_inline void count_n(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		*v += n; /* per-CPU slot, and BPF programs do not nest on a CPU: no atomics */
}

static __always_inline void count(__u32 idx)
{
	count_n(idx, 1);
}

/* Room for a record of `size` bytes; `lost` counts a failure. */
static __always_inline void *reserve(__u64 size, __u32 lost)
{
#ifdef MEMLEAK_PERFBUF
	__u32 cpu = bpf_get_smp_processor_id();
	void *rec = size <= STAGING_BYTES ? bpf_map_lookup_elem(&staging, &cpu) : 0;
#else
	void *rec = bpf_ringbuf_reserve(&events, size, 0);

	if (rec)
		count_n(C_BYTES_SENT, size);
#endif
	if (!rec)
		count(lost);
	return rec;
}

/*
 * Sends a reserved record of `size` bytes; returns 0 when it went out.
 * Ring buffer: submitted without a wakeup until enough is pending (a wakeup
 * costs more than the probe); the reader also drains on a timer. Misses
 * (`urgent`) wake it at once: the allocations of that path miss until it
 * answers. Perf buffer: copied out of the staging buffer.
 */
static __always_inline int submit(void *ctx, void *rec, __u64 size, int urgent, __u32 lost)
{
#ifdef MEMLEAK_PERFBUF
	asm volatile("" : "+r"(size));
	if (size > STAGING_BYTES || bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, rec, size) != 0) {
		count(lost);
		return -1;
	}
	count_n(C_BYTES_SENT, size);
	return 0;
#else
	__u64 pending = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);

	bpf_ringbuf_submit(rec, urgent || pending >= cfg.wakeup_bytes ? BPF_RB_FORCE_WAKEUP
								       : BPF_RB_NO_WAKEUP);
	return 0;
#endif
}

/*
 * True when a call at `sp` is nested inside another allocator call on the
 * same thread (calloc -> malloc inside libc), so the caller counts it once.
 * Deeper on the stack: called from inside the allocator. At the same sp:
 * tail-called by it (reallocarray -> realloc); both return probes fire on
 * the one return. Shallower, or implausibly deep: the outer call's return
 * was lost; that is counted and the state reset.
 */
static __always_inline int nested(struct thread_state *st, __u64 sp)
{
	if (!st || st->depth == 0)
		return 0;
	if (sp <= st->entry_sp && st->depth < MAX_NESTING)
		return 1;
	count(C_MISSING_RETURN);
	st->depth = 0;
	return 0;
}

/* ---- The stack walk ---------------------------------------------------- */

/* Mixes one word into a stack hash; crates/bpf/src/lib.rs has the same. */
static __always_inline __u64 mix(__u64 h, __u64 w)
{
	h ^= w;
	h *= 0x100000001b3ULL;
	h ^= h >> 29;
	return h;
}

#define HASH_SEED 0xcbf29ce484222325ULL

/* CFA / register arithmetic as the user-space unwinder does it: u64 plus a
 * signed offset, overflow is an error. */
static __always_inline int add_off(__u64 base, __s64 off, __u64 *out)
{
	__u64 r = base + (__u64)off;

	if (off < 0 ? r > base : r < base)
		return -1;
	*out = r;
	return 0;
}

/* One stack slot. Like the user-space copy: nothing below the sp at entry,
 * nothing implausibly far above it. */
static __always_inline int read_word(__u64 addr, __u64 sp0, __u64 *out)
{
	ureg w = 0;

	if (addr < sp0 || addr - sp0 > (1ULL << 30))
		return -1;
	if (bpf_probe_read_user(&w, sizeof(w), (const void *)(long)addr) != 0)
		return -1;
	*out = w;
	return 0;
}

struct regs {
	__u64 pc, sp, fp;
	__u64 fp_ok;
};

/* The value of register `reg` in a frame after the first: the
 * return-address register is not known there. */
static __always_inline int get_reg(struct regs *r, __u32 reg, __u64 *out)
{
	if (reg == UR_SP) {
		*out = r->sp;
		return 0;
	}
	if (reg == UR_FP && r->fp_ok) {
		*out = r->fp;
		return 0;
	}
	return -1;
}

/* Recovers a caller's register. Returns 1 with a value, 0 when it has none
 * (undefined), -1 on an error. `cur`/`cur_ok` is its current value. */
static __always_inline int recover(__u8 how, __s32 off, __u64 cfa, struct regs *r, __u64 cur,
				   int cur_ok, __u64 sp0, __u64 *out)
{
	__u32 op = how & 0xf, reg = how >> 4;
	__u64 base;

	switch (op) {
	case RR_UNDEFINED:
		return 0;
	case RR_SAME:
		if (!cur_ok)
			return 0;
		*out = cur;
		return 1;
	case RR_AT_CFA:
		if (add_off(cfa, off, &base) || read_word(base, sp0, out))
			return -1;
		return 1;
	case RR_VAL_CFA:
		return add_off(cfa, off, out) ? -1 : 1;
	case RR_AT_REG:
		if (get_reg(r, reg, &base) || add_off(base, off, &base) || read_word(base, sp0, out))
			return -1;
		return 1;
	case RR_IN_REG:
		return get_reg(r, reg, out) ? -1 : 1;
	}
	return -1;
}

static __always_inline void push(struct kstack *st, __u32 n, __u64 pc, __u64 method, __u64 *h)
{
	__u64 w = (pc & PC_MASK) | (method << METHOD_SHIFT);

	st->pcs[n & (KSTACK_MAX - 1)] = w;
	*h = mix(*h, w);
}

/*
 * Walks the stack at an allocator's entry into `st`, the same way the
 * user-space unwinder does (crates/unwind-arch/src/unwinder.rs), and returns
 * the stack's hash. st->end says why it stopped; END_MISS: at a PC without a
 * usable rule, user space must finish it from a copy.
 */
static __always_inline __u64 walk(struct scratch *sc)
{
	struct kstack *st = &sc->st;
	struct regs r = {};
	__u64 h = HASH_SEED, ra = 0, sp0 = sc->regs[1];
	__u32 n = 1, end = 0, max = cfg.max_frames;
	struct rule_key key = { .tgid = sc->tgid };

	r.pc = sc->regs[0];
	r.sp = sp0;
	r.fp = sc->regs[2];
	r.fp_ok = 1;
	push(st, 0, r.pc, M_REGS, &h);

	/* Frame 1: the caller, by the ABI's rule at a function's entry. */
#if defined(__TARGET_ARCH_x86)
	if (read_word(sp0, sp0, &ra)) {
		end = END_ERROR;
		goto out;
	}
	if (ra == 0) {
		end = END_OUTERMOST;
		goto out;
	}
	r.sp = sp0 + 8;
#else
	ra = sc->regs[3];
	if (ra == 0) {
		end = END_OUTERMOST;
		goto out;
	}
	if (ra == r.pc) {
		end = END_ERROR; /* did not advance */
		goto out;
	}
#endif
	r.pc = ra & cfg.pc_mask;
	push(st, n, r.pc, M_ENTRY, &h);
	n++;

	for (int i = 0; i < KSTACK_MAX - 2; i++) {
		struct unwind_rule *rule;
		__u64 cfa, base, nfp = 0;
		int got;

		if (n >= max) {
			end = END_MAX_DEPTH;
			goto out;
		}
		key.pc = r.pc - 1;
		rule = bpf_map_lookup_elem(&rules, &key);
		if (!rule) {
			end = END_MISS;
			goto out;
		}
		if ((rule->kind & 0xf) == RK_NO_INFO) {
			end = END_NO_INFO;
			goto out;
		}
		if ((rule->kind & 0xf) != RK_STEP) {
			count(C_UNEXPRESSIBLE);
			end = END_MISS;
			goto out;
		}
		count(C_RULE_HITS);
		/* The CFA: the caller's sp. */
		if (get_reg(&r, rule->cfa & 0xf, &base) || add_off(base, rule->cfa_off, &cfa)) {
			end = END_ERROR;
			goto out;
		}
		if ((rule->cfa & CFA_DEREF) && read_word(cfa, sp0, &cfa)) {
			end = END_ERROR;
			goto out;
		}
		/* The return address: the caller's pc. */
		got = recover(rule->ra, rule->ra_off, cfa, &r, 0, 0, sp0, &ra);
		if (got < 0 || ((rule->ra & 0xf) == RR_SAME)) {
			end = END_ERROR; /* needs the return-address register, unknown here */
			goto out;
		}
		if (got == 0 || ra == 0) {
			end = END_OUTERMOST;
			goto out;
		}
		got = recover(rule->fp, rule->fp_off, cfa, &r, r.fp, r.fp_ok, sp0, &nfp);
		if (got < 0 || cfa < r.sp || (cfa == r.sp && ra == r.pc)) {
			end = END_ERROR;
			goto out;
		}
		r.fp_ok = got;
		r.fp = nfp;
		r.sp = cfa;
		r.pc = ra & cfg.pc_mask;
		push(st, n, r.pc, rule->kind >> 4, &h);
		n++;
	}
	/* KSTACK_MAX frames walked. */
	end = n >= max ? END_MAX_DEPTH : END_MISS;
	if (end == END_MISS)
		count(C_KERNEL_TOO_DEEP);
out:
	st->nr = n;
	st->end = end;
	h = mix(h, n) & ~MISS_ID_BIT;
	return h ? h : 1;
}

/* Keeps a walked stack (once). */
static __always_inline void store_stack(__u64 id, struct kstack *st)
{
	void *map = st->nr <= KSTACK_SHORT ? (void *)&stacks : (void *)&deep_stacks;
	long err;

	if (bpf_map_lookup_elem(map, &id))
		return;
	err = bpf_map_update_elem(map, &id, st, BPF_NOEXIST);
	if (err != 0 && err != -EEXIST)
		count(C_STACKS_FULL);
}

/*
 * Copies user memory from sp up to cfg.stack_bytes or the stack's end,
 * whichever comes first. The end is learnt per thread: the first copy goes
 * page by page and remembers the first unreadable page (a fault costs far
 * more than a copy), later copies stop right there in one read.
 */
static __always_inline __u32 copy_stack(struct stack_event *e, __u64 sp, __u64 *stack_end,
					__u32 *flags)
{
	__u64 limit = cfg.stack_bytes;
	__u64 len = 0;

	if (limit > MAX_STACK_BYTES)
		limit = MAX_STACK_BYTES;
	if (*stack_end > sp && *stack_end - sp <= limit) {
		limit = *stack_end - sp;
		*flags |= F_STACK_END;
	}
	asm volatile("" : "+r"(limit));
	if (limit > MAX_STACK_BYTES)
		return 0; /* bound for the verifier; never true */
	if (bpf_probe_read_user(e->stack, limit, (const void *)(long)sp) == 0)
		return limit;
	*flags &= ~F_STACK_END;
	limit = cfg.stack_bytes;
	if (limit > MAX_STACK_BYTES)
		limit = MAX_STACK_BYTES;
	for (int i = 0; i < MAX_STACK_BYTES / COPY_CHUNK + 1; i++) {
		__u64 addr = sp + len;
		__u64 chunk = COPY_CHUNK - (addr & (COPY_CHUNK - 1));

		if (len >= limit)
			break;
		if (chunk > limit - len)
			chunk = limit - len;
		/* Bounds the verifier can see (the compiler must not drop them):
		 * the buffer has COPY_CHUNK bytes of slack after stack_bytes. */
		asm volatile("" : "+r"(chunk), "+r"(len));
		if (chunk > COPY_CHUNK || len > MAX_STACK_BYTES)
			break;
		if (bpf_probe_read_user(e->stack + len, chunk, (const void *)(long)addr) != 0) {
			*flags |= F_STACK_END;
			*stack_end = addr;
			break;
		}
		len += chunk;
	}
	return len;
}

/* One read of `need` bytes (<= room) up to the thread's known stack end.
 * If it fails (the end moved: a new thread with the same tid), the copy is
 * empty and the end is forgotten, so the next call learns it again. */
static __always_inline __u32 copy_known(struct stack_event *e, __u64 sp, __u64 need, __u64 room,
					__u64 *stack_end, __u32 *flags, int at_end)
{
	asm volatile("" : "+r"(need));
	if (need > room)
		return 0; /* bound for the verifier; never true */
	if (bpf_probe_read_user(e->stack, need, (const void *)(long)sp) != 0) {
		if (at_end)
			*stack_end = 0;
		return 0;
	}
	if (at_end)
		*flags |= F_STACK_END;
	return need;
}

/*
 * Sends the registers, the kernel's (partial) stack and a copy of the user
 * stack: EV_MISS for a stack user space must finish, EV_VERIFY for one the
 * kernel finished (--verify-unwind). Returns 0 when sent.
 */
static __always_inline int send_stack(void *ctx, struct scratch *sc, __u32 type, __u64 id)
{
	__u64 sp = sc->regs[1], need, *stack_end = &sc->stack_end, *hint;
	struct stack_event *e;
	__u32 flags = 0, lost;
	int at_end;

	/* Reserve what the copy needs: once the thread's stack end is known,
	 * the copy is one read of (stack_end - sp) bytes and a small record
	 * class fits; otherwise stack_bytes plus a chunk of slack for the
	 * page-wise copy. */
	need = (*stack_end > sp && *stack_end - sp <= cfg.stack_bytes) ? *stack_end - sp : ~0ULL;
	at_end = need != ~0ULL;
	/* User space learnt where this thread's outermost frame is: the rest
	 * of the stack (the main thread's environment) is never needed. */
	hint = bpf_map_lookup_elem(&copy_ends, &sc->tid);
	if (hint && *hint > sp && *hint - sp < need && *hint - sp <= cfg.stack_bytes) {
		need = *hint - sp;
		at_end = 0;
	}
#ifndef MEMLEAK_PERFBUF
	if (type == EV_VERIFY && bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >
					 bpf_ringbuf_query(&events, BPF_RB_RING_SIZE) / 4) {
		/* Verification yields to misses: only with room to spare. */
		count(C_VERIFY_SKIPPED);
		return -1;
	}
#endif
	lost = type == EV_VERIFY ? C_VERIFY_SKIPPED : C_RINGBUF_DROPS;
	if (need <= TINY_STACK)
		e = reserve(sizeof(*e) + TINY_STACK, lost);
	else if (need <= SMALL_STACK)
		e = reserve(sizeof(*e) + SMALL_STACK, lost);
	else if (need <= MEDIUM_STACK)
		e = reserve(sizeof(*e) + MEDIUM_STACK, lost);
	else
		e = reserve(sizeof(*e) + cfg.stack_bytes + COPY_CHUNK, lost);
	if (!e)
		return -1;
	e->hdr.type = type;
	e->hdr.tid = sc->tid;
	e->hdr.ts_ns = bpf_ktime_get_ns();
	e->tgid = sc->tgid;
	e->stack_id = id;
	e->regs[0] = sc->regs[0];
	e->regs[1] = sp;
	e->regs[2] = sc->regs[2];
	e->regs[3] = sc->regs[3];
	__builtin_memcpy(&e->kstack, &sc->st, sizeof(sc->st));
	e->_pad = 0;
	if (need <= TINY_STACK)
		e->stack_len = copy_known(e, sp, need, TINY_STACK, stack_end, &flags, at_end);
	else if (need <= SMALL_STACK)
		e->stack_len = copy_known(e, sp, need, SMALL_STACK, stack_end, &flags, at_end);
	else if (need <= MEDIUM_STACK)
		e->stack_len = copy_known(e, sp, need, MEDIUM_STACK, stack_end, &flags, at_end);
	else
		e->stack_len = copy_stack(e, sp, stack_end, &flags);
	e->flags = flags;
	return submit(ctx, e, sizeof(*e) + e->stack_len, type == EV_MISS, lost);
}

/*
 * The stack of the allocation whose entry probe tail-called this program,
 * from the scratch's inputs: walked, stored, and sent to user space where
 * the kernel could not finish it; its id goes into the thread's state. A
 * program of its own, reached by a tail call, so that the verifier checks
 * the walk once instead of once per allocator (and the interpreter of
 * 32-bit MIPS, which cannot mix tail calls with BPF-to-BPF calls, runs it).
 */
SEC("uprobe")
int walk_stack(struct pt_regs *ctx)
{
	__u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&scratch, &zero);
	struct thread_state *ts;
	__u64 id, miss;

	if (!sc)
		return 0;
	id = walk(sc);
	if (sc->st.end != END_MISS) {
		count(C_KERNEL_STACKS);
		store_stack(id, &sc->st);
		if (cfg.verify)
			send_stack(ctx, sc, EV_VERIFY, id);
	} else {
		count(C_MISSES);
		miss = MISS_ID_BIT | ((__u64)bpf_get_smp_processor_id() << 40) |
		       (sc->miss_seq++ & ((1ULL << 40) - 1));
		if (send_stack(ctx, sc, EV_MISS, miss) == 0) {
			id = miss;
		} else {
			/* No room for the copy: keep the part the kernel walked. */
			sc->st.end = END_COPY_LOST;
			store_stack(id, &sc->st);
		}
	}
	ts = bpf_map_lookup_elem(&threads, &sc->tid);
	if (ts) {
		ts->stack_id = id;
		ts->stack_end = sc->stack_end;
	}
	return 0;
}

static __always_inline void trace_call(void *ctx, __u32 tgid, __u32 tid, __u32 kind, __u64 size,
				       __u64 addr, __u64 old_ptr)
{
	struct trace_event *e = reserve(sizeof(*e), C_RINGBUF_DROPS);

	if (!e)
		return;
	e->hdr.type = EV_TRACE;
	e->hdr.tid = tid;
	e->hdr.ts_ns = bpf_ktime_get_ns();
	e->tgid = tgid;
	e->kind = kind;
	e->size = size;
	e->addr = addr;
	e->old_ptr = old_ptr;
	submit(ctx, e, sizeof(*e), 0, C_RINGBUF_DROPS);
}

/* ---- The books ---------------------------------------------------------- */

static __always_inline void book(void *map, __u32 tgid, __u64 addr, struct thread_state *st)
{
	struct alloc_key key = { .addr = addr, .tgid = tgid };
	struct alloc_info info = {
		.size = st->size,
		.stack_id = st->stack_id,
		.ts_ns = bpf_ktime_get_ns(), /* booked now: see unbook_older() */
	};
	long err = bpf_map_update_elem(map, &key, &info, BPF_NOEXIST);

	if (err == -EEXIST) {
		count(C_REPLACED);
		err = bpf_map_update_elem(map, &key, &info, BPF_ANY);
	}
	if (err != 0)
		count(C_ALLOCS_FULL);
}

/*
 * realloc's old block leaves the books when realloc returns; but realloc
 * freed it inside the allocator before that, and another thread may already
 * have been given the same address (and booked it). Only a block booked
 * before this realloc began is the old one.
 */
static __always_inline void unbook_older(void *map, __u32 tgid, __u64 addr, __u64 since)
{
	struct alloc_key key = { .addr = addr, .tgid = tgid };
	struct alloc_info *old = bpf_map_lookup_elem(map, &key);

	if (old && old->ts_ns < since)
		bpf_map_delete_elem(map, &key);
}

static __always_inline int on_entry(struct pt_regs *ctx, __u32 kind, __u64 size, __u64 old_ptr,
				    __u64 memptr)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid, tgid = pid_tgid >> 32;
	__u64 sp = REG_SP(ctx);
	struct thread_state *st = bpf_map_lookup_elem(&threads, &tid);
	struct thread_state fresh = {};

	if (nested(st, sp)) {
		st->depth++;
		count(C_NESTED);
		return 0;
	}
	fresh.stack_end = st ? st->stack_end : 0;
	fresh.sample_ctr = st ? st->sample_ctr : 0;
	fresh.bytes_left = st ? st->bytes_left : 0;
	fresh.tracked = 1;
	if (size < cfg.min_size || size > cfg.max_size) {
		count(C_FILTERED);
		fresh.tracked = 0;
	} else if (cfg.sample_bytes) {
		/* The allocation holds a sampled byte when the gap to it ends
		 * within its size: probability 1 - exp(-size/N), gaps being
		 * exponential (memoryless). Then a new gap. */
		if (fresh.bytes_left == 0)
			fresh.bytes_left = next_gap();
		if (size >= fresh.bytes_left) {
			fresh.bytes_left = next_gap();
		} else {
			fresh.bytes_left -= size;
			count(C_SAMPLED_OUT);
			fresh.tracked = 0;
		}
	} else if (cfg.sample_rate > 1) {
		/* Every Nth allocation of each thread, starting with the first. */
		if (fresh.sample_ctr % cfg.sample_rate != 0) {
			count(C_SAMPLED_OUT);
			fresh.tracked = 0;
		}
		fresh.sample_ctr++;
	}
	fresh.entry_sp = sp;
	fresh.memptr = memptr;
	fresh.size = size;
	fresh.old_ptr = old_ptr;
	fresh.depth = 1;
	fresh.kind = kind;
	fresh.ts_ns = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&threads, &tid, &fresh, BPF_ANY) != 0) {
		count(C_STATE_FULL);
		return 0;
	}
	if (fresh.tracked) {
		__u32 zero = 0;
		struct scratch *sc = bpf_map_lookup_elem(&scratch, &zero);

		if (!sc)
			return 0;
		sc->regs[0] = REG_PC(ctx);
		sc->regs[1] = sp;
		sc->regs[2] = (ureg)REG_FP(ctx);
		sc->regs[3] = (ureg)REG_RA(ctx);
		sc->stack_end = fresh.stack_end;
		sc->tgid = tgid;
		sc->tid = tid;
		bpf_tail_call(ctx, &walkers, 0);
		count(C_NO_WALKER); /* only reached when the tail call failed */
	}
	return 0;
}

static __always_inline int on_free(struct pt_regs *ctx, __u32 kind, __u64 addr, __u64 len)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid, tgid = pid_tgid >> 32;
	struct alloc_key key = { .addr = addr, .tgid = tgid };
	struct alloc_info *region;

	if (nested(bpf_map_lookup_elem(&threads, &tid), REG_SP(ctx))) {
		count(C_NESTED);
		return 0; /* realloc's own free, or malloc's munmap */
	}
	if (addr == 0)
		return 0; /* free(NULL) */
	if (cfg.trace)
		trace_call(ctx, tgid, tid, kind, len, addr, 0);
	if (kind == K_FREE) {
		bpf_map_delete_elem(&allocs, &key);
		return 0;
	}
	/* munmap: the whole region, or its head, here; anything else (a tail, a
	 * middle, several regions) by user space, which sees every region. */
	region = bpf_map_lookup_elem(&mmaps, &key);
	if (region && len >= region->size) {
		bpf_map_delete_elem(&mmaps, &key);
		return 0;
	}
	if (region && len > 0) {
		struct alloc_info rest = *region;
		struct alloc_key tail = { .addr = addr + len, .tgid = tgid };

		rest.size -= len;
		bpf_map_delete_elem(&mmaps, &key);
		if (bpf_map_update_elem(&mmaps, &tail, &rest, BPF_ANY) != 0)
			count(C_ALLOCS_FULL);
		return 0;
	}
	{
		struct munmap_event *e = reserve(sizeof(*e), C_RINGBUF_DROPS);

		if (!e)
			return 0;
		count(C_MUNMAP_EVENTS);
		e->hdr.type = EV_MUNMAP;
		e->hdr.tid = tid;
		e->hdr.ts_ns = bpf_ktime_get_ns();
		e->tgid = tgid;
		e->_pad = 0;
		e->addr = addr;
		e->len = len;
		submit(ctx, e, sizeof(*e), 0, C_RINGBUF_DROPS);
	}
	return 0;
}

SEC("uprobe")
int malloc_entry(struct pt_regs *ctx)
{
	return on_entry(ctx, K_MALLOC, (ureg)REG_ARG0(ctx), 0, 0);
}

SEC("uprobe")
int calloc_entry(struct pt_regs *ctx)
{
	return on_entry(ctx, K_CALLOC, (__u64)(ureg)REG_ARG0(ctx) * (ureg)REG_ARG1(ctx), 0, 0);
}

SEC("uprobe")
int realloc_entry(struct pt_regs *ctx)
{
	return on_entry(ctx, K_REALLOC, (ureg)REG_ARG1(ctx), (ureg)REG_ARG0(ctx), 0);
}

SEC("uprobe")
int reallocarray_entry(struct pt_regs *ctx)
{
	return on_entry(ctx, K_REALLOCARRAY, (__u64)(ureg)REG_ARG1(ctx) * (ureg)REG_ARG2(ctx),
			(ureg)REG_ARG0(ctx), 0);
}

SEC("uprobe")
int posix_memalign_entry(struct pt_regs *ctx)
{
	return on_entry(ctx, K_POSIX_MEMALIGN, (ureg)REG_ARG2(ctx), 0, (ureg)REG_ARG0(ctx));
}

SEC("uprobe")
int aligned_alloc_entry(struct pt_regs *ctx)
{
	return on_entry(ctx, K_ALIGNED_ALLOC, (ureg)REG_ARG1(ctx), 0, 0);
}

SEC("uprobe")
int memalign_entry(struct pt_regs *ctx)
{
	return on_entry(ctx, K_MEMALIGN, (ureg)REG_ARG1(ctx), 0, 0);
}

SEC("uprobe")
int valloc_entry(struct pt_regs *ctx)
{
	return on_entry(ctx, K_VALLOC, (ureg)REG_ARG0(ctx), 0, 0);
}

SEC("uprobe")
int pvalloc_entry(struct pt_regs *ctx)
{
	return on_entry(ctx, K_PVALLOC, (ureg)REG_ARG0(ctx), 0, 0);
}

SEC("uprobe")
int mmap_entry(struct pt_regs *ctx)
{
	return on_entry(ctx, K_MMAP, (ureg)REG_ARG1(ctx), 0, 0);
}

/* One return probe serves every allocation function: the kind is in the thread state. */
static __always_inline int on_return(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid, tgid = pid_tgid >> 32;
	struct thread_state *st = bpf_map_lookup_elem(&threads, &tid);
	__u64 ret = (ureg)REG_RET(ctx);

	if (!st || st->depth == 0) {
		count(C_MISSING_ENTRY);
		return 0;
	}
	if (st->depth > 1) {
		st->depth--;
		return 0;
	}
	st->depth = 0;
	if (st->kind == K_POSIX_MEMALIGN) {
		ureg block = 0;

		/* posix_memalign returns 0 on success and stores the block in *memptr. */
		if (ret != 0)
			ret = 0;
		else if (bpf_probe_read_user(&block, sizeof(block), (const void *)(long)st->memptr) != 0)
			count(C_MEMPTR_FAULT);
		else
			ret = block;
	} else if (st->kind == K_MMAP && ret == (ureg)-1) {
		ret = 0; /* MAP_FAILED */
	}
	if (cfg.trace)
		trace_call(ctx, tgid, tid, st->kind, st->size, ret, st->old_ptr);
	if (st->kind == K_REALLOC || st->kind == K_REALLOCARRAY) {
		/* The old block is freed only when realloc succeeds (or, in
		 * glibc, when it is asked for 0 bytes). */
		if (ret != 0) {
			if (st->old_ptr != 0)
				unbook_older(&allocs, tgid, st->old_ptr, st->ts_ns);
		} else if (st->size == 0 && st->old_ptr != 0) {
			/* realloc(p, 0) returned NULL: glibc, uClibc and jemalloc
			 * freed p; musl returns a block (NULL only when it could
			 * not allocate one, which 0 bytes never meet). */
			unbook_older(&allocs, tgid, st->old_ptr, st->ts_ns);
		}
	}
	if (ret == 0 || !st->tracked)
		return 0; /* failed allocations are not leaks */
	book(st->kind == K_MMAP ? (void *)&mmaps : (void *)&allocs, tgid, ret, st);
	return 0;
}

SEC("uretprobe")
int alloc_return(struct pt_regs *ctx)
{
	return on_return(ctx);
}

SEC("uprobe")
int free_entry(struct pt_regs *ctx)
{
	return on_free(ctx, K_FREE, (ureg)REG_ARG0(ctx), 0);
}

SEC("uprobe")
int munmap_entry(struct pt_regs *ctx)
{
	return on_free(ctx, K_MUNMAP, (ureg)REG_ARG0(ctx), (ureg)REG_ARG1(ctx));
}

/*
 * The dynamic linker calls _dl_debug_state (r_brk) around every change of
 * its list of objects, with r_debug.r_state saying which. At RT_DELETE
 * (dlclose, before anything is unmapped) the list goes to user space, which
 * keeps the files of objects that disappear: stacks taken while they were
 * mapped, whose records it may read only later, still place their frames.
 * struct r_debug { int r_version; struct link_map *r_map; ElfW(Addr) r_brk;
 * enum r_state; ... }: r_map at one word, r_state at three.
 * struct link_map { ElfW(Addr) l_addr; char *l_name; ElfW(Dyn) *l_ld;
 * struct link_map *l_next, *l_prev; ... }.
 */
#define RT_DELETE 2

SEC("uprobe")
int link_change(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 *r_debug = bpf_map_lookup_elem(&r_debugs, &tgid);
	struct linkmap_event *e;
	ureg map = 0, lm[4];
	int state = 0;

	if (!r_debug)
		return 0;
	if (bpf_probe_read_user(&state, sizeof(state), (const void *)(long)(*r_debug + 3 * sizeof(ureg))) != 0 ||
	    state != RT_DELETE)
		return 0;
	if (bpf_probe_read_user(&map, sizeof(map), (const void *)(long)(*r_debug + sizeof(ureg))) != 0)
		return 0;
	e = reserve(sizeof(*e), C_RINGBUF_DROPS);
	if (!e)
		return 0;
	e->hdr.type = EV_LINKMAP;
	e->hdr.tid = (__u32)bpf_get_current_pid_tgid();
	e->hdr.ts_ns = bpf_ktime_get_ns();
	e->tgid = tgid;
	e->nr = 0;
	for (int i = 0; i < LINKMAP_MAX; i++) {
		if (map == 0 || bpf_probe_read_user(lm, sizeof(lm), (const void *)(long)map) != 0)
			break;
		e->entries[i].base = lm[0];
		e->entries[i].name[0] = 0;
		if (lm[1] != 0)
			bpf_probe_read_user_str(e->entries[i].name, LINKMAP_NAME, (const void *)(long)lm[1]);
		e->nr = i + 1;
		map = lm[3];
	}
	submit(ctx, e, sizeof(*e), 1, C_RINGBUF_DROPS);
	return 0;
}

/*
 * Kernels with multi-uprobe links (6.6+) get every entry through one link
 * and every return through another, the kind in each probe's cookie:
 * detaching a link waits for one RCU grace period, not one per probe (17
 * links took 1.5 s to close). The loader loads these two programs instead
 * of the ones above only there (the cookie helper is 5.15+).
 */
SEC("uprobe.multi")
int entry_multi(struct pt_regs *ctx)
{
	__u64 kind = bpf_get_attach_cookie(ctx);
	__u64 a0 = (ureg)REG_ARG0(ctx), a1 = (ureg)REG_ARG1(ctx), a2 = (ureg)REG_ARG2(ctx);
	__u64 size = a0, old_ptr = 0, memptr = 0;

	switch (kind) {
	case K_FREE:
		return on_free(ctx, K_FREE, a0, 0);
	case K_MUNMAP:
		return on_free(ctx, K_MUNMAP, a0, a1);
	case K_MALLOC:
	case K_VALLOC:
	case K_PVALLOC:
		break;
	case K_CALLOC:
		size = a0 * a1;
		break;
	case K_REALLOC:
		size = a1;
		old_ptr = a0;
		break;
	case K_REALLOCARRAY:
		size = a1 * a2;
		old_ptr = a0;
		break;
	case K_POSIX_MEMALIGN:
		size = a2;
		memptr = a0;
		break;
	case K_ALIGNED_ALLOC:
	case K_MEMALIGN:
	case K_MMAP:
		size = a1;
		break;
	default:
		return 0;
	}
	return on_entry(ctx, (__u32)kind, size, old_ptr, memptr);
}

SEC("uretprobe.multi")
int return_multi(struct pt_regs *ctx)
{
	return on_return(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
