/*
 * malloc_bench: a deterministic malloc/free loop for measuring allocator tracers.
 *
 * Usage: malloc_bench [--wait] [--go-file PATH] [--keep N] [PAIRS]
 *
 *   PAIRS        number of malloc/free pairs (default 200000)
 *   --wait       print "pid=N waiting" to stderr, then wait for SIGUSR1 (or for
 *                the --go-file to exist) before starting, so that a tool can
 *                attach to this PID first
 *   --go-file P  with --wait: also start when file P appears (the program
 *                removes P each time a wait ends, so P can be used again)
 *   --keep N     before the loop, allocate N blocks of KEEP_SIZE bytes from
 *                one call site (keep_blocks) and keep them live to the end:
 *                they are never freed (the process exits with them), so a
 *                leak detector must report exactly N blocks from that site.
 *                With --wait, the program then prints "kept=N waiting" and
 *                waits a second time (a second SIGUSR1, or P again) before
 *                the loop, so that the tool's figures for the loop can be
 *                taken apart from those of the N allocations.
 *
 * The loop keeps a window of live blocks: each iteration frees the block in a
 * pseudo-randomly chosen slot (if any) and allocates a new one of a mixed size.
 * Every block the loop allocates is freed exactly once, so the loop makes
 * exactly PAIRS calls to malloc and PAIRS calls to free (plus whatever libc
 * does on its own outside the loop) and leaks nothing; --keep adds N calls to
 * malloc before the loop, which leave the loop's generator alone (the loop's
 * calls are the same with or without --keep).
 *
 * Only the loop is timed (CLOCK_MONOTONIC). The result goes to stderr:
 *   loop_seconds=1.234567 pairs=200000 checksum=... kept=N
 * Nothing is written to stdout, and no stdio is used.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WINDOW 256   /* live blocks at most; a power of two */
#define KEEP_SIZE 32 /* bytes per --keep block */

static volatile sig_atomic_t go; /* SIGUSR1s received */
static void *slots[WINDOW];

static void on_usr1(int sig)
{
	(void)sig;
	go++;
}

/* Numerical Recipes LCG; we use the high bits. */
static uint32_t lcg_state = 12345u;
static inline uint32_t lcg(void)
{
	lcg_state = lcg_state * 1664525u + 1013904223u;
	return lcg_state;
}

/* Mixed sizes: mostly small, some medium, a few large (all below the default
 * mmap threshold, so they are served from the heap). */
static inline size_t next_size(void)
{
	uint32_t r = lcg() >> 8;
	uint32_t kind = r & 15;
	r >>= 4;
	if (kind < 10)
		return 8 + (r % 120);     /* 8..127 bytes: 10/16 */
	if (kind < 14)
		return 128 + (r % 1920);  /* 128..2047: 4/16 */
	if (kind < 15)
		return 2048 + (r % 14336); /* 2 KiB..16 KiB: 1/16 */
	return 16384 + (r % 49152);        /* 16..64 KiB: 1/16 */
}

static void put(const char *s)
{
	size_t n = strlen(s);
	while (n > 0) {
		ssize_t w = write(2, s, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		s += w;
		n -= (size_t)w;
	}
}

/* Waits for the n-th SIGUSR1 since the start, or for go_file to exist
 * (then removes it). */
static void wait_go(int n, const char *go_file)
{
	const struct timespec tick = { 0, 10 * 1000 * 1000 }; /* 10 ms */
	while (go < n) {
		struct stat st;
		if (go_file && stat(go_file, &st) == 0)
			break;
		nanosleep(&tick, NULL); /* returns early on SIGUSR1 */
	}
	if (go_file)
		unlink(go_file);
}

/* The --keep blocks: one call site, so one stack in a tool's report. */
static __attribute__((noinline)) int keep_blocks(void **keep, long n)
{
	for (long i = 0; i < n; i++) {
		unsigned char *p = malloc(KEEP_SIZE);
		if (!p)
			return -1;
		p[0] = (unsigned char)i;
		keep[i] = p;
	}
	return 0;
}

static void usage(void)
{
	put("usage: malloc_bench [--wait] [--go-file PATH] [--keep N] [PAIRS]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	long pairs = 200000;
	long keep_n = 0;
	void **keep = NULL;
	int wait_mode = 0;
	const char *go_file = NULL;
	char buf[256];

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--wait") == 0) {
			wait_mode = 1;
		} else if (strcmp(argv[i], "--go-file") == 0) {
			if (++i >= argc)
				usage();
			go_file = argv[i];
		} else if (strcmp(argv[i], "--keep") == 0) {
			char *end;
			if (++i >= argc)
				usage();
			keep_n = strtol(argv[i], &end, 10);
			if (*end != '\0' || keep_n < 0 || keep_n > 100000000)
				usage();
		} else if (argv[i][0] == '-') {
			usage();
		} else {
			char *end;
			pairs = strtol(argv[i], &end, 10);
			if (*end != '\0' || pairs <= 0)
				usage();
		}
	}

	if (keep_n > 0) {
		/* The array of pointers is allocated before any tool is attached
		 * (and is large enough to be an mmap): only the blocks count. */
		keep = calloc((size_t)keep_n, sizeof(*keep));
		if (!keep) {
			put("malloc_bench: out of memory\n");
			return 1;
		}
	}

	if (wait_mode) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_usr1;
		sigemptyset(&sa.sa_mask);
		if (sigaction(SIGUSR1, &sa, NULL) != 0) {
			put("malloc_bench: sigaction failed\n");
			return 1;
		}
		snprintf(buf, sizeof(buf), "pid=%ld waiting\n", (long)getpid());
		put(buf);
		wait_go(1, go_file);
	}

	if (keep_n > 0) {
		if (keep_blocks(keep, keep_n) != 0) {
			put("malloc_bench: out of memory\n");
			return 1;
		}
		if (wait_mode) {
			snprintf(buf, sizeof(buf), "kept=%ld waiting\n", keep_n);
			put(buf);
			wait_go(2, go_file);
		}
	}

	uint64_t checksum = 0;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);

	for (long i = 0; i < pairs; i++) {
		uint32_t slot = (lcg() >> 16) & (WINDOW - 1);
		if (slots[slot]) {
			checksum += *(unsigned char *)slots[slot];
			free(slots[slot]);
		}
		size_t sz = next_size();
		unsigned char *p = malloc(sz);
		if (!p) {
			put("malloc_bench: out of memory\n");
			return 1;
		}
		/* Touch the block so that the allocation cannot be optimised away. */
		p[0] = (unsigned char)i;
		p[sz - 1] = (unsigned char)sz;
		slots[slot] = p;
	}
	for (int s = 0; s < WINDOW; s++) {
		if (slots[s]) {
			checksum += *(unsigned char *)slots[s];
			free(slots[s]);
			slots[s] = NULL;
		}
	}

	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	snprintf(buf, sizeof(buf), "loop_seconds=%.6f pairs=%ld checksum=%llu kept=%ld\n", secs,
		 pairs, (unsigned long long)checksum, keep_n);
	put(buf);
	/* The --keep blocks are not freed: they go with the process. */
	return 0;
}
