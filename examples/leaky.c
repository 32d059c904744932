/*
 * leaky.c - the classic leaky demo program for memleak.
 *
 * Usage: leaky [ITERATIONS [SLEEP_MS]]
 *
 * Each iteration allocates ALLOC_SIZE bytes through the call chain
 *   main -> alloc_v1 -> alloc_v2 -> alloc_v3 -> malloc
 * and every second allocation (odd iterations) is freed again, so
 * ceil(ITERATIONS / 2) blocks leak.  ITERATIONS defaults to 10, SLEEP_MS
 * (pause after each iteration) to 0.
 *
 * The program allocates nothing besides these blocks: it never uses stdio
 * (a stdio stream buffer would be an extra malloc) and writes its output
 * to stderr with write(2).  At exit it prints the ground truth:
 *   EXPECT leaked_bytes=<n> leaked_allocations=<m>
 *
 * The comments of the form CALL:<callee> mark the source line of each call
 * in the chain; the end-to-end tests look them up to know which line a
 * symbolized stack frame must report.
 *
 * Build: gcc -O2 -g -fomit-frame-pointer -fno-inline leaky.c -o leaky
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ALLOC_SIZE 16

/* noinline keeps each function a real frame; noipa (GCC) also stops
 * cloning and interprocedural tricks that could rename or merge them. */
#if defined(__GNUC__) && !defined(__clang__)
#define NOINLINE __attribute__((noinline, noipa))
#else
#define NOINLINE __attribute__((noinline))
#endif

/* Every pointer passes through this volatile global, so no call in the
 * chain can be turned into a tail call or optimized away. */
char *volatile last_block;

NOINLINE char *alloc_v3(void)
{
	char *p = malloc(ALLOC_SIZE); /* CALL:malloc */
	if (p != NULL)
		memset(p, 3, ALLOC_SIZE);
	last_block = p;
	return last_block;
}

NOINLINE char *alloc_v2(void)
{
	char *p = alloc_v3(); /* CALL:alloc_v3 */
	if (p != NULL)
		p[1] = 2;
	last_block = p;
	return last_block;
}

NOINLINE char *alloc_v1(void)
{
	char *p = alloc_v2(); /* CALL:alloc_v2 */
	if (p != NULL)
		p[2] = 1;
	last_block = p;
	return last_block;
}

/* Output goes to stderr one whole line per write(2), so that it never
 * interleaves with what a tracer writes to the same stream; no stdio. */
static char line_buf[512];
static size_t line_len;

static void put_str(const char *s)
{
	while (*s != '\0' && line_len < sizeof(line_buf))
		line_buf[line_len++] = *s++;
}

static void put_u64(unsigned long long v)
{
	char buf[24];
	char *p = buf + sizeof(buf) - 1;
	*p = '\0';
	do {
		*--p = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	put_str(p);
}

/* Writes the line collected by put_str/put_u64 (plus a newline). */
static void put_line(void)
{
	const char *s = line_buf;
	size_t len;
	if (line_len == sizeof(line_buf))
		line_len--;
	line_buf[line_len++] = '\n';
	len = line_len;
	while (len > 0) {
		ssize_t n = write(2, s, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		s += n;
		len -= (size_t)n;
	}
	line_len = 0;
}

static void sleep_ms(long ms)
{
	struct timespec ts;
	if (ms <= 0)
		return;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

int main(int argc, char **argv)
{
	long iterations = argc > 1 ? strtol(argv[1], NULL, 10) : 10;
	long pause_ms = argc > 2 ? strtol(argv[2], NULL, 10) : 0;
	unsigned long long leaked_bytes = 0, leaked_allocations = 0;
	long i;

	if (iterations < 0)
		iterations = 0;

	for (i = 0; i < iterations; i++) {
		char *p = alloc_v1(); /* CALL:alloc_v1 */
		if (p == NULL) {
			put_str("leaky: malloc failed");
			put_line();
			return 1;
		}
		if (i % 2 == 1) {
			free(p);
		} else {
			leaked_bytes += ALLOC_SIZE;
			leaked_allocations++;
		}
		sleep_ms(pause_ms);
	}

	put_str("EXPECT leaked_bytes=");
	put_u64(leaked_bytes);
	put_str(" leaked_allocations=");
	put_u64(leaked_allocations);
	put_line();
	return 0;
}
