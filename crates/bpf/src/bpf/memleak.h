/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The ABI between memleak.bpf.c and the Rust loader (crates/bpf/src/lib.rs
 * mirrors it with #[repr(C)] types; a build test checks every size and
 * offset against the object's BTF). Every field is naturally aligned and no
 * struct has implicit padding, so the layout is the same on every target.
 * Records and map entries are produced and consumed on the same machine:
 * native byte order.
 *
 * The data path:
 *  - the outstanding blocks live in the `allocs` hash map, keyed by
 *    (process, address); frees, munmap and realloc update it in the kernel;
 *  - each allocation's stack is walked in the kernel with the compact rules
 *    of the `rules` map, keyed by (process, pc - 1); the PCs are hashed into a
 *    stack id and stored once in the `stacks` map;
 *  - a PC without a rule is a miss: the stack is copied through the ring
 *    buffer (EV_MISS); user space unwinds the copy with DWARF CFI, attributes
 *    the allocation (its stack id is then the miss id) and fills the rules of
 *    every PC of that chain, so the next allocation on the path stays in the
 *    kernel.
 */
#ifndef MEMLEAK_H
#define MEMLEAK_H

/* Record types (event_hdr.type). */
#define EV_MISS   1 /* a stack the kernel could not finish: registers + stack copy */
#define EV_VERIFY 2 /* --verify-unwind: the kernel's stack + registers + stack copy */
#define EV_MUNMAP 3 /* a munmap the kernel could not apply to `mmaps` by itself */
#define EV_TRACE  4 /* -t: one allocator call */
#define EV_LINKMAP 5 /* the loaded libraries when a dlclose is about to unmap some */

/* What was called. */
#define K_MALLOC         0
#define K_CALLOC         1
#define K_REALLOC        2
#define K_REALLOCARRAY   3
#define K_POSIX_MEMALIGN 4
#define K_ALIGNED_ALLOC  5
#define K_MEMALIGN       6
#define K_VALLOC         7
#define K_PVALLOC        8
#define K_MMAP           9
#define K_FREE           10
#define K_MUNMAP         11
#define NR_KINDS         12

/* stack_event.flags */
#define F_STACK_END 1 /* the copy reached the stack's end (an unreadable page) */

/* Loss and bookkeeping counters (index into the per-CPU `counters` array). */
#define C_RINGBUF_DROPS    0  /* a record could not be reserved: a stack copy (or -t line) lost */
#define C_MISSING_RETURN   1  /* an entry found a stale call on the same thread (its return never came) */
#define C_MISSING_ENTRY    2  /* a return without a recorded entry */
#define C_STATE_FULL       3  /* the per-thread map was full: call not tracked */
#define C_NESTED           4  /* allocator calls made from inside the allocator (counted once) */
#define C_SAMPLED_OUT      5  /* skipped by --sample-rate */
#define C_FILTERED         6  /* skipped by --min-size / --max-size */
#define C_MEMPTR_FAULT     7  /* posix_memalign: could not read *memptr at return */
#define C_ALLOCS_FULL      8  /* the `allocs` map was full: a block is missing from the books */
#define C_STACKS_FULL      9  /* the `stacks` map was full: an allocation's stack is unknown */
#define C_KERNEL_STACKS    10 /* allocations whose stack the kernel walked to its end */
#define C_MISSES           11 /* allocations whose stack went to user space (a PC without a rule) */
#define C_RULE_HITS        12 /* frames stepped with a cached rule */
#define C_UNEXPRESSIBLE    13 /* misses at a PC whose rule the kernel cannot run */
#define C_KERNEL_TOO_DEEP  14 /* misses because the stack is deeper than the kernel walks */
#define C_REPLACED         15 /* a new block at an address still in the books (its free was not seen) */
#define C_MUNMAP_EVENTS    16 /* partial munmaps handed to user space */
#define C_BYTES_SENT       17 /* ring-buffer bytes reserved */
#define C_NO_WALKER        18 /* the tail call to walk_stack failed: a stack is unknown */
#define C_VERIFY_SKIPPED   19 /* --verify-unwind: no room in the ring buffer for a verification copy */
#define NR_COUNTERS        20

/* Registers copied at entry, in this order: pc, sp, fp, ra (0 where the
 * architecture has no return-address register, e.g. x86_64). */
#define NR_REGS 4

/* Deepest stack the kernel walks and stores; deeper ones (with a larger
 * --max-frames) go to user space as misses. */
#define KSTACK_MAX 64
/* Stacks of up to this many frames are stored in a smaller table (a prefix
 * of struct kstack: nr, end and the first KSTACK_SHORT pcs). */
#define KSTACK_SHORT 16
#define KSTACK_SHORT_BYTES 136

/* Upper bound of --stack-bytes, and the chunk size of the page-wise copy. */
#define MAX_STACK_BYTES 65536
#define COPY_CHUNK      4096

/* How a frame was found: the top byte of each stored pc (user-space
 * addresses never use it). Same numbers as the unwinder's Method. */
#define M_REGS     0
#define M_ENTRY    1
#define M_CFI      2
#define M_FP       3
#define M_PROLOGUE 4
#define M_SCAN     5 /* user space only: a scanned frame (never in the rule cache) */
#define METHOD_SHIFT 56
#define PC_MASK ((1ULL << METHOD_SHIFT) - 1)

/* Why a stack walk ended (kstack.end). */
#define END_OUTERMOST 1 /* the return address is undefined or zero */
#define END_MAX_DEPTH 2 /* --max-frames */
#define END_NO_INFO   3 /* a PC without any rule (no CFI and no fallback) */
#define END_ERROR     4 /* a rule gave something impossible, or read outside the stack */
#define END_MISS      5 /* the kernel stopped at a PC without a cached rule (user space finishes) */
#define END_COPY_LOST 6 /* a miss whose stack copy could not be sent: the stack is partial */

/* unwind_rule.kind */
#define RK_STEP        1 /* a rule to run; the high nibble of kind is its method (M_*) */
#define RK_NO_INFO     2 /* no rule exists: the walk ends here (END_NO_INFO) */
#define RK_UNEXPRESSIBLE 3 /* a rule the kernel cannot run: send a copy */

/* unwind_rule.cfa: the base register in the low nibble, CFA_DEREF for
 * CFA = *(reg + off). Registers: */
#define UR_SP 1
#define UR_FP 2
#define UR_RA 3
#define CFA_DEREF 0x10
/* unwind_rule.ra / .fp: the operation in the low nibble, a register in the high one. */
#define RR_UNDEFINED 0 /* no value (for the return address: outermost frame) */
#define RR_SAME      1 /* the current value */
#define RR_AT_CFA    2 /* saved at CFA + off */
#define RR_VAL_CFA   3 /* the value is CFA + off */
#define RR_AT_REG    4 /* saved at reg + off */
#define RR_IN_REG    5 /* the value is in reg */

/* Set by the loader before load (.rodata); constants for the verifier. */
struct config {
	unsigned long long min_size;
	unsigned long long max_size;
	unsigned long long wakeup_bytes; /* wake the reader once this much is pending */
	unsigned long long pc_mask;      /* bits of a code address (aarch64: without PAC bits) */
	unsigned int stack_bytes; /* bytes to copy from sp on a miss, <= MAX_STACK_BYTES, multiple of 8 */
	unsigned int sample_rate; /* 1: every allocation; N: every Nth per thread */
	unsigned int max_frames;  /* --max-frames */
	unsigned int verify;      /* 1: send every tracked allocation's copy with the kernel's stack */
	unsigned int trace;       /* 1: -t, send every call */
	unsigned int sample_bytes; /* 0: off; N: each byte sampled with probability 1/N (--sample-bytes) */
};

/* --sample-bytes: the gaps between sampled bytes are exponential with mean
 * N (as tcmalloc samples): SAMPLE_GAPS quantiles of that distribution,
 * filled in by the loader, one drawn at random after each sample. */
#define SAMPLE_GAPS 1024

struct event_hdr {
	unsigned int type;
	unsigned int tid;
	unsigned long long ts_ns; /* bpf_ktime_get_ns */
};

/* A stack as the kernel walked it: `nr` PCs, innermost first, each with its
 * method in the top byte. */
struct kstack {
	unsigned int nr;
	unsigned int end; /* END_* */
	unsigned long long pcs[KSTACK_MAX];
};

/* The values of `stacks`: the head of struct kstack. */
struct kstack_short {
	unsigned int nr;
	unsigned int end;
	unsigned long long pcs[KSTACK_SHORT];
};

/* Keys of `allocs` and `mmaps`. */
struct alloc_key {
	unsigned long long addr;
	unsigned int tgid;
	unsigned int _pad;
};

/* An outstanding block. */
struct alloc_info {
	unsigned long long size;
	unsigned long long stack_id; /* a key of `stacks`, or a miss id (MISS_ID_BIT set) */
	unsigned long long ts_ns; /* when it was booked (the allocator returned) */
};

/* Stack ids with this bit are miss ids: user space maps them to a stack. */
#define MISS_ID_BIT 0x8000000000000000ULL

/* Keys of `rules`: a return address minus one (or an exact pc) in a process. */
struct rule_key {
	unsigned long long pc;
	unsigned int tgid;
	unsigned int _pad;
};

struct unwind_rule {
	int cfa_off;
	int ra_off;
	int fp_off;
	unsigned char cfa; /* UR_* | CFA_DEREF */
	unsigned char ra;  /* RR_* | UR_* << 4 */
	unsigned char fp;  /* RR_* | UR_* << 4 */
	unsigned char kind; /* RK_* | M_* << 4 (the method of RK_STEP) */
};

/* EV_MISS and EV_VERIFY */
struct stack_event {
	struct event_hdr hdr;
	unsigned int tgid;
	unsigned int flags;        /* F_STACK_END */
	unsigned long long stack_id; /* EV_MISS: the miss id; EV_VERIFY: the kernel's stack id */
	unsigned long long regs[NR_REGS];
	struct kstack kstack;      /* as far as the kernel walked */
	unsigned int stack_len;    /* valid bytes in stack[] */
	unsigned int _pad;
	unsigned char stack[];     /* a copy of user memory from regs[1] (sp) upwards */
};

/* EV_MUNMAP */
struct munmap_event {
	struct event_hdr hdr;
	unsigned int tgid;
	unsigned int _pad;
	unsigned long long addr;
	unsigned long long len;
};

/* EV_TRACE */
struct trace_event {
	struct event_hdr hdr;
	unsigned int tgid;
	unsigned int kind;
	unsigned long long size;
	unsigned long long addr; /* the new block (0: failed), or the block freed */
	unsigned long long old_ptr;
};

/* EV_LINKMAP: the dynamic linker's list of loaded objects (struct
 * link_map, <link.h>) when it announces a dlclose (r_state RT_DELETE),
 * before it unmaps anything: where each object is, by name, so that stacks
 * taken while it was mapped still find its file. */
#define LINKMAP_MAX  48  /* objects sent (the first ones of the list) */
#define LINKMAP_NAME 256 /* bytes of each path, NUL included */

struct linkmap_entry {
	unsigned long long base; /* l_addr: the load bias */
	char name[LINKMAP_NAME]; /* l_name ("" for the program itself) */
};

struct linkmap_event {
	struct event_hdr hdr;
	unsigned int tgid;
	unsigned int nr;
	struct linkmap_entry entries[LINKMAP_MAX];
};

/* The Rust mirror (crates/bpf/src/lib.rs) asserts the same sizes. */
_Static_assert(sizeof(struct config) == 56, "struct config");
_Static_assert(sizeof(struct alloc_key) == 16, "struct alloc_key");
_Static_assert(sizeof(struct alloc_info) == 24, "struct alloc_info");
_Static_assert(sizeof(struct rule_key) == 16, "struct rule_key");
_Static_assert(sizeof(struct unwind_rule) == 16, "struct unwind_rule");
_Static_assert(sizeof(struct kstack) == 8 + 8 * KSTACK_MAX, "struct kstack");
_Static_assert(sizeof(struct kstack_short) == KSTACK_SHORT_BYTES, "struct kstack_short");
_Static_assert(sizeof(struct stack_event) == 72 + sizeof(struct kstack), "struct stack_event");
_Static_assert(sizeof(struct munmap_event) == 40, "struct munmap_event");
_Static_assert(sizeof(struct trace_event) == 48, "struct trace_event");
_Static_assert(sizeof(struct linkmap_event) == 24 + LINKMAP_MAX * 264, "struct linkmap_event");

#endif /* MEMLEAK_H */
