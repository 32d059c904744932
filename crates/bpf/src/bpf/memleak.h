/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Records shared by memleak.bpf.c and the Rust loader (crates/bpf/src/lib.rs
 * mirrors them with #[repr(C)]). Every field is naturally aligned and the
 * structs have no implicit padding, so the layout is the same for all targets.
 * Records are produced and consumed on the same machine: native byte order.
 */
#ifndef MEMLEAK_H
#define MEMLEAK_H

/* Event types (event_hdr.type). */
#define EV_ENTRY  1 /* allocator entry: registers + stack copy */
#define EV_RETURN 2 /* allocator return: the address (0: failed) */
#define EV_FREE   3 /* free / munmap */

/* What was called (entry_event.kind, free_event.kind). */
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

/* entry_event.flags */
#define F_UNTRACKED   1 /* filtered out (size or sampling): only the free side matters */
#define F_STACK_END   2 /* the stack copy reached the stack's end (an unreadable page) before stack_bytes */

/* Loss and bookkeeping counters (index into the per-CPU `counters` array). */
#define C_RINGBUF_DROPS   0 /* bpf_ringbuf_reserve failed: event lost */
#define C_MISSING_RETURN  1 /* an entry found a stale call on the same thread (its return never came) */
#define C_MISSING_ENTRY   2 /* a return without a recorded entry */
#define C_STATE_FULL      3 /* the per-thread map was full: call not tracked */
#define C_NESTED          4 /* allocator calls made from inside the allocator (counted once) */
#define C_SAMPLED_OUT     5 /* skipped by --sample-rate */
#define C_FILTERED        6 /* skipped by --min-size / --max-size */
#define C_MEMPTR_FAULT    7 /* posix_memalign: could not read *memptr at return */
#define NR_COUNTERS       8

/* Registers copied at entry, in this order: pc, sp, fp, ra (0 where the
 * architecture has no return-address register, e.g. x86_64). */
#define NR_REGS 4

/* Upper bound of --stack-bytes, and the chunk size of the page-wise copy. */
#define MAX_STACK_BYTES 65536
#define COPY_CHUNK      4096

struct config {
	unsigned long long min_size;
	unsigned long long max_size;
	unsigned int stack_bytes; /* bytes to copy from sp, <= MAX_STACK_BYTES, multiple of 8 */
	unsigned int sample_rate; /* 1: every allocation */
	unsigned long long wakeup_bytes; /* wake the reader once this much is pending */
};

struct event_hdr {
	unsigned int type;
	unsigned int tid;
	unsigned long long ts_ns; /* bpf_ktime_get_ns */
};

struct entry_event {
	struct event_hdr hdr;
	unsigned int kind;
	unsigned int flags;
	unsigned long long size;    /* requested bytes */
	unsigned long long old_ptr; /* realloc / reallocarray: the block passed in */
	unsigned long long regs[NR_REGS];
	unsigned int stack_len;     /* valid bytes in stack[] */
	unsigned int _pad;
	unsigned char stack[];      /* a copy of user memory from regs[1] (sp) upwards */
};

struct return_event {
	struct event_hdr hdr;
	unsigned long long retval; /* the new block, 0 when the call failed */
};

struct free_event {
	struct event_hdr hdr;
	unsigned int kind;
	unsigned int _pad;
	unsigned long long addr;
	unsigned long long len; /* munmap only */
};

#endif /* MEMLEAK_H */
