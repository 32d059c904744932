// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * memleak's allocator probes.
 *
 * Built with clang for bpfel or bpfeb with no BTF of the kernel, no CO-RE and
 * no vmlinux.h: the only kernel type read is `struct pt_regs`, laid out by hand
 * per architecture below. The object's own BTF (clang -g) only describes its
 * maps, which every kernel with BPF_SYSCALL can load.
 *
 * At an allocator's entry the probe copies the registers the unwinder needs
 * and the user stack from sp upwards into the ring buffer; the return probe
 * sends the returned address. Userspace pairs them per thread, unwinds the
 * copy with DWARF CFI and keeps the outstanding blocks. Capturing at entry
 * means the caller is never lost: its return address is still in a register
 * or at [sp].
 */
#include "memleak.h"

typedef unsigned char __u8;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef long long __s64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __always_inline inline __attribute__((always_inline))

/* Allocator calls nested in one another on a thread; more means a lost return. */
#define MAX_NESTING 16

/* Record classes for copies up to a known stack end. */
#define SMALL_STACK 2048
#define MEDIUM_STACK 4096

/* Helper numbers are part of the kernel ABI (include/uapi/linux/bpf.h). */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static long (*bpf_probe_read_user)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)112;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;
static __u64 (*bpf_ringbuf_query)(void *ringbuf, __u64 flags) = (void *)134;

#define BPF_RB_NO_WAKEUP 1
#define BPF_RB_FORCE_WAKEUP 2
#define BPF_RB_AVAIL_DATA 0

#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_RINGBUF 27
#define BPF_MAP_TYPE_LRU_HASH 9

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
	.stack_bytes = 8192,
	.sample_rate = 1,
	.wakeup_bytes = 1 << 20,
};

/* Per-thread state between an allocator's entry and its return. */
struct thread_state {
	__u64 entry_sp; /* sp at the outermost entry: tells nesting from a lost return */
	__u64 memptr;   /* posix_memalign's out pointer */
	__u32 depth;    /* allocator calls in progress on this thread */
	__u32 kind;
	__u32 emitted;  /* 1 when the entry event was sent (its return must be sent too) */
	__u32 _pad;
	__u64 stack_end; /* first unreadable address above this thread's sp, once seen */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH); /* exited threads age out */
	__uint(max_entries, 16384); /* threads; the loader may resize */
	__type(key, __u32);
	__type(value, struct thread_state);
} threads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* the loader may resize */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sample_clock SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		*v += 1; /* per-CPU slot: no atomics needed */
}

/*
 * Submits a record, waking the reader only once enough is pending: a wakeup
 * per record (an IPI to the reader's CPU) costs more than the probe itself.
 * The reader also drains the buffer on a timer.
 */
static __always_inline void submit(void *rec)
{
	__u64 pending = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);

	bpf_ringbuf_submit(rec, pending >= cfg.wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

static __always_inline __u32 current_tid(void)
{
	return (__u32)bpf_get_current_pid_tgid();
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

/*
 * Copies user memory from sp up to cfg.stack_bytes or the stack's end,
 * whichever comes first. The end is learnt per thread: the first copy goes
 * page by page and remembers the first unreadable page (a fault costs far
 * more than a copy), later copies stop right there in one read.
 */
static __always_inline __u32 copy_stack(struct entry_event *e, __u64 sp, __u64 *stack_end,
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
static __always_inline __u32 copy_known(struct entry_event *e, __u64 sp, __u64 need, __u64 room,
					__u64 *stack_end, __u32 *flags)
{
	asm volatile("" : "+r"(need));
	if (need > room)
		return 0; /* bound for the verifier; never true */
	if (bpf_probe_read_user(e->stack, need, (const void *)(long)sp) != 0) {
		*stack_end = 0;
		return 0;
	}
	*flags |= F_STACK_END;
	return need;
}

static __always_inline int on_entry(struct pt_regs *ctx, __u32 kind, __u64 size, __u64 old_ptr,
				    __u64 memptr)
{
	__u32 tid = current_tid();
	__u64 sp = REG_SP(ctx);
	struct thread_state *st = bpf_map_lookup_elem(&threads, &tid);
	struct thread_state fresh = {};
	struct entry_event *e;
	__u64 stack_end, need;
	__u32 flags = 0;

	if (nested(st, sp)) {
		st->depth++;
		count(C_NESTED);
		return 0;
	}
	stack_end = st ? st->stack_end : 0;
	if (size < cfg.min_size || size > cfg.max_size) {
		count(C_FILTERED);
		flags |= F_UNTRACKED;
	} else if (cfg.sample_rate > 1) {
		__u32 zero = 0;
		__u64 *clock = bpf_map_lookup_elem(&sample_clock, &zero);

		if (clock && __sync_fetch_and_add(clock, 1) % cfg.sample_rate != 0) {
			count(C_SAMPLED_OUT);
			flags |= F_UNTRACKED;
		}
	}

	fresh.entry_sp = sp;
	fresh.memptr = memptr;
	fresh.depth = 1;
	fresh.kind = kind;
	fresh.stack_end = stack_end;
	/* An untracked call still needs its return for realloc's free side. */
	fresh.emitted = !(flags & F_UNTRACKED) || kind == K_REALLOC || kind == K_REALLOCARRAY;
	if (bpf_map_update_elem(&threads, &tid, &fresh, 0) != 0) {
		count(C_STATE_FULL);
		return 0;
	}
	if (!fresh.emitted)
		return 0;

	/*
	 * Reserve what the copy needs: once the thread's stack end is known,
	 * the copy is one read of (stack_end - sp) bytes and a small record
	 * class fits; otherwise stack_bytes plus a chunk of slack for the
	 * page-wise copy.
	 */
	need = (stack_end > sp && stack_end - sp <= cfg.stack_bytes) ? stack_end - sp : ~0ULL;
	if (flags & F_UNTRACKED)
		e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	else if (need <= SMALL_STACK)
		e = bpf_ringbuf_reserve(&events, sizeof(*e) + SMALL_STACK, 0);
	else if (need <= MEDIUM_STACK)
		e = bpf_ringbuf_reserve(&events, sizeof(*e) + MEDIUM_STACK, 0);
	else
		e = bpf_ringbuf_reserve(&events, sizeof(*e) + cfg.stack_bytes + COPY_CHUNK, 0);
	st = bpf_map_lookup_elem(&threads, &tid);
	if (!e) {
		count(C_RINGBUF_DROPS);
		if (st)
			st->emitted = 0;
		return 0;
	}
	e->hdr.type = EV_ENTRY;
	e->hdr.tid = tid;
	e->hdr.ts_ns = bpf_ktime_get_ns();
	e->kind = kind;
	e->size = size;
	e->old_ptr = old_ptr;
	e->regs[0] = REG_PC(ctx);
	e->regs[1] = sp;
	e->regs[2] = REG_FP(ctx);
	e->regs[3] = REG_RA(ctx);
	e->_pad = 0;
	if (flags & F_UNTRACKED)
		e->stack_len = 0;
	else if (need <= SMALL_STACK)
		e->stack_len = copy_known(e, sp, need, SMALL_STACK, &stack_end, &flags);
	else if (need <= MEDIUM_STACK)
		e->stack_len = copy_known(e, sp, need, MEDIUM_STACK, &stack_end, &flags);
	else
		e->stack_len = copy_stack(e, sp, &stack_end, &flags);
	e->flags = flags;
	if (st)
		st->stack_end = stack_end;
	submit(e);
	return 0;
}

static __always_inline int on_free(__u32 kind, __u64 addr, __u64 len, __u64 sp)
{
	__u32 tid = current_tid();
	struct free_event *e;

	if (nested(bpf_map_lookup_elem(&threads, &tid), sp)) {
		count(C_NESTED);
		return 0; /* realloc's own free, or malloc's munmap */
	}
	if (addr == 0)
		return 0; /* free(NULL) */
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(C_RINGBUF_DROPS);
		return 0;
	}
	e->hdr.type = EV_FREE;
	e->hdr.tid = tid;
	e->hdr.ts_ns = bpf_ktime_get_ns();
	e->kind = kind;
	e->_pad = 0;
	e->addr = addr;
	e->len = len;
	submit(e);
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
SEC("uretprobe")
int alloc_return(struct pt_regs *ctx)
{
	__u32 tid = current_tid();
	struct thread_state *st = bpf_map_lookup_elem(&threads, &tid);
	struct return_event *e;
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
	if (!st->emitted)
		return 0;
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
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(C_RINGBUF_DROPS);
		return 0;
	}
	e->hdr.type = EV_RETURN;
	e->hdr.tid = tid;
	e->hdr.ts_ns = bpf_ktime_get_ns();
	e->retval = ret;
	submit(e);
	return 0;
}

SEC("uprobe")
int free_entry(struct pt_regs *ctx)
{
	return on_free(K_FREE, (ureg)REG_ARG0(ctx), 0, REG_SP(ctx));
}

SEC("uprobe")
int munmap_entry(struct pt_regs *ctx)
{
	return on_free(K_MUNMAP, (ureg)REG_ARG0(ctx), (ureg)REG_ARG1(ctx), REG_SP(ctx));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
