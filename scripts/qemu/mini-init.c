/*
 * mini-init.c - /init for guests without a busybox (big-endian MIPS: Debian
 * ships no busybox for it). Does what init.sh does, step for step, with the
 * same marker lines on the console; keep the two in step. With
 * `mlq.expect=error` on the kernel command line it runs the expected-error
 * steps (errcmd, errpid) instead of the leak checks.
 *
 * Build: <gnu_triple>-gcc -static -Os -o init mini-init.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#define M "==MLQ=="
#define MAX_ARGS 64

static char *opts[MAX_ARGS];
static int n_opts;

static void read_opts(void)
{
	static char buf[1024];
	int fd = open("/memleak-opts", O_RDONLY);
	ssize_t n;
	char *p, *save = NULL;
	if (fd < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	for (p = strtok_r(buf, " \t\n", &save); p != NULL && n_opts < MAX_ARGS - 16;
	     p = strtok_r(NULL, " \t\n", &save))
		opts[n_opts++] = p;
}

static void cat(const char *path)
{
	char buf[4096];
	ssize_t n;
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return;
	fflush(stdout);
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		fwrite(buf, 1, (size_t)n, stdout);
	close(fd);
}

static int read_line(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;
	if (fd < 0)
		return -1;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	buf[strcspn(buf, " \n")] = '\0';
	return 0;
}

static void stamp(const char *step)
{
	char up[64] = "?";
	read_line("/proc/uptime", up, sizeof(up));
	printf(M " T %s %s\n", step, up);
	fflush(stdout);
}

static void show(const char *step, const char *stream, const char *path)
{
	printf(M " BEGIN %s %s\n", step, stream);
	cat(path);
	printf("\n" M " END %s %s\n", step, stream);
	fflush(stdout);
}

/* Starts argv with stdout and stderr to the given files (NULL: console). */
static pid_t start(char **argv, const char *out, const char *err)
{
	pid_t pid;
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		if (out != NULL) {
			int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
			dup2(fd, 1);
			close(fd);
		}
		if (err != NULL) {
			int fd = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
			dup2(fd, 2);
			close(fd);
		}
		execv(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

static int wait_for(pid_t pid)
{
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return 255;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + WTERMSIG(status);
}

/* memleak [SUB] (`verbose` times -v) OPTS args...; returns its code. */
static int vrun(const char *step, char *sub, int verbose, va_list ap)
{
	char *argv[MAX_ARGS + 8];
	int n = 0, i, rc;
	char *a;

	argv[n++] = "/memleak";
	if (sub != NULL)
		argv[n++] = sub;
	for (i = 0; i < verbose && i < 4; i++)
		argv[n++] = "-v";
	for (i = 0; i < n_opts; i++)
		argv[n++] = opts[i];
	while ((a = va_arg(ap, char *)) != NULL && n < MAX_ARGS + 7)
		argv[n++] = a;
	argv[n] = NULL;

	stamp(step);
	rc = wait_for(start(argv, "/tmp/out", "/tmp/err"));
	{
		char done[128];
		snprintf(done, sizeof(done), "%s.done", step);
		stamp(done);
	}
	show(step, "stdout", "/tmp/out");
	show(step, "stderr", "/tmp/err");
	printf(M " RC %s %d\n", step, rc);
	fflush(stdout);
	return rc;
}

/* run(step, verbose, args..., NULL): memleak, `verbose` times -v, OPTS, args;
 * returns its code. */
static int run(const char *step, int verbose, ...)
{
	va_list ap;
	int rc;
	va_start(ap, verbose);
	rc = vrun(step, NULL, verbose, ap);
	va_end(ap);
	return rc;
}

/* run_sub(step, sub, verbose, args..., NULL): memleak SUB (a subcommand,
 * which must be memleak's first argument), then as run(). */
static int run_sub(const char *step, char *sub, int verbose, ...)
{
	va_list ap;
	int rc;
	va_start(ap, verbose);
	rc = vrun(step, sub, verbose, ap);
	va_end(ap);
	return rc;
}

/* A binary file for the host, as init.sh's show_file: its size, then
 * base64 in lines of 76 characters (as base64(1) writes them). */
static void show_file(const char *step, const char *stream, const char *path)
{
	static const char abc[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	unsigned char in[57]; /* 76 characters of base64 */
	char out[80];
	struct stat st;
	size_t n, i, o;
	int fd = open(path, O_RDONLY);

	printf(M " BEGIN %s %s\n", step, stream);
	if (fd < 0 || fstat(fd, &st) != 0) {
		printf("missing\n");
	} else {
		printf("bytes=%lld\n", (long long)st.st_size);
		for (;;) {
			/* A whole line's worth of input, short reads joined. */
			ssize_t r;
			n = 0;
			while (n < sizeof(in) && (r = read(fd, in + n, sizeof(in) - n)) > 0)
				n += (size_t)r;
			if (n == 0)
				break;
			for (i = 0, o = 0; i < n; i += 3) {
				unsigned v = (unsigned)in[i] << 16;
				if (i + 1 < n)
					v |= (unsigned)in[i + 1] << 8;
				if (i + 2 < n)
					v |= in[i + 2];
				out[o++] = abc[v >> 18 & 63];
				out[o++] = abc[v >> 12 & 63];
				out[o++] = i + 1 < n ? abc[v >> 6 & 63] : '=';
				out[o++] = i + 2 < n ? abc[v & 63] : '=';
			}
			out[o] = '\0';
			printf("%s\n", out);
			if (n < sizeof(in))
				break;
		}
	}
	if (fd >= 0)
		close(fd);
	printf(M " END %s %s\n", step, stream);
	fflush(stdout);
}

/* Is WORD one of the kernel command line's words? */
static int cmdline_has(const char *word)
{
	static char buf[4096];
	char *p, *save = NULL;
	int fd = open("/proc/cmdline", O_RDONLY);
	ssize_t n;
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	for (p = strtok_r(buf, " \t\n", &save); p != NULL; p = strtok_r(NULL, " \t\n", &save))
		if (strcmp(p, word) == 0)
			return 1;
	return 0;
}

static void finish(void)
{
	int fd;
	{
		/* dmesg: the kernel log buffer through syslog(2)'s /proc/kmsg
		 * sibling, /dev/kmsg, read without blocking. */
		char rec[2048];
		ssize_t n;
		printf(M " BEGIN kernel dmesg\n");
		fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
		while (fd >= 0 && (n = read(fd, rec, sizeof(rec) - 1)) > 0) {
			/* "prio,seq,usec,flags;message\n" -> "[sec.usec] message" */
			unsigned long long usec = 0;
			char *msg;
			rec[n] = '\0';
			msg = strchr(rec, ';');
			sscanf(rec, "%*u,%*u,%llu", &usec);
			printf("[%5llu.%06llu] %s", usec / 1000000, usec % 1000000,
			       msg != NULL ? msg + 1 : rec);
		}
		if (fd >= 0)
			close(fd);
		printf("\n" M " END kernel dmesg\n");
	}
	stamp("done");
	printf(M " DONE\n");
	fflush(stdout);
	sync();
	reboot(RB_POWER_OFF);
	sleep(5);
	reboot(RB_AUTOBOOT);
}

/* The target of the -p runs: leaky allocating every 100 ms for up to a
 * minute (memleak may take 10 s to load on an old kernel), stopped with
 * stop_leaky_bg once memleak is done. The child is attachable once it has
 * exec'd /leaky-dyn (before that, /proc/PID/exe is this init): wait for it,
 * up to 5 s. */
static pid_t start_leaky_bg(void)
{
	char *argv[] = { "/leaky-dyn", "600", "100", NULL };
	char path[64], exe[256];
	pid_t pid = start(argv, NULL, "/tmp/leaky-err");

	snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	for (int i = 0; i < 50; i++) {
		ssize_t n = readlink(path, exe, sizeof(exe) - 1);
		if (n > 0) {
			exe[n] = 0;
			if (strcmp(exe, "/leaky-dyn") == 0)
				break;
		}
		usleep(100000);
	}
	return pid;
}

static int stop_leaky_bg(pid_t pid)
{
	kill(pid, SIGTERM);
	return wait_for(pid);
}

int main(void)
{
	struct utsname u;
	char buf[64], pidbuf[32];
	int fd, rc, cpus = 0, expect_error;
	pid_t pid;
	FILE *f;

	mkdir("/proc", 0755);
	mkdir("/sys", 0755);
	mkdir("/dev", 0755);
	mkdir("/tmp", 01777);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	fd = open("/dev/console", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, NULL);
	mount("debugfs", "/sys/kernel/debug", "debugfs", 0, NULL);
	mount("tmpfs", "/tmp", "tmpfs", 0, NULL);
	setenv("PATH", "/bin:/sbin:/usr/bin:/usr/sbin", 1);
	read_opts();
	/* MEMLEAK_QEMU_JIT on the host: 1 or 0 for net.core.bpf_jit_enable. */
	if (read_line("/bpf-jit", buf, sizeof(buf)) == 0 && buf[0] != '\0') {
		fd = open("/proc/sys/net/core/bpf_jit_enable", O_WRONLY);
		if (fd < 0 || write(fd, buf, strlen(buf)) < 0)
			printf("init: cannot set bpf_jit_enable to %s\n", buf);
		if (fd >= 0)
			close(fd);
	}

	printf(M " BEGIN info\n");
	uname(&u);
	printf("kernel=%s\nmachine=%s\n", u.release, u.machine);
	printf("btf=%s\n", access("/sys/kernel/btf/vmlinux", F_OK) == 0 ? "yes" : "no");
	/* net.core.bpf_jit_enable; "absent" without a JIT in the kernel. */
	if (read_line("/proc/sys/net/core/bpf_jit_enable", buf, sizeof(buf)) == 0)
		printf("bpf_jit_enable=%s\n", buf);
	else
		printf("bpf_jit_enable=absent\n");
	f = fopen("/proc/cpuinfo", "r");
	if (f != NULL) {
		char line[256];
		while (fgets(line, sizeof(line), f) != NULL)
			if (strncmp(line, "processor", 9) == 0)
				cpus++;
		fclose(f);
	}
	printf("cpus=%d\n", cpus);
	/* What a uprobe needs: the perf PMU, or uprobe_events in tracefs. */
	printf("uprobe_pmu=%s\n",
	       access("/sys/bus/event_source/devices/uprobe/type", F_OK) == 0 ? "yes" : "no");
	if (access("/sys/kernel/tracing/uprobe_events", F_OK) == 0)
		printf("uprobe_events=yes\n");
	else if (access("/sys/kernel/tracing/trace", F_OK) == 0)
		printf("uprobe_events=no (tracefs mounted)\n");
	else
		printf("uprobe_events=no (no tracefs)\n");
	printf("opts=");
	for (int i = 0; i < n_opts; i++)
		printf("%s%s", i ? " " : "", opts[i]);
	expect_error = cmdline_has("mlq.expect=error");
	printf("\nmode=%s\n", expect_error ? "expect-error" : "leaks");
	printf(M " END info\n");

	if (expect_error) {
		/* memleak must refuse this kernel: on a command, and on a PID. */
		run("errcmd", 0, "--", "/leaky-dyn", "6", "0", NULL);
		run("errcmd.verbose", 1, "--", "/leaky-dyn", "6", "0", NULL);
		pid = start_leaky_bg();
		printf(M " PID errpid %d\n", (int)pid);
		snprintf(pidbuf, sizeof(pidbuf), "%d", (int)pid);
		run("errpid", 0, "-p", pidbuf, "1", "2", NULL);
		stop_leaky_bg(pid);
		finish();
		return 0;
	}

	if (run("dyn", 0, "--format", "json", "--", "/leaky-dyn", "6", "0", NULL) != 0)
		run("dyn.verbose", 1, "--format", "json", "--", "/leaky-dyn", "6", "0", NULL);
	if (run("static", 0, "--format", "json", "--", "/leaky-static", "6", "0", NULL) != 0)
		run("static.verbose", 1, "--format", "json", "--", "/leaky-static", "6", "0", NULL);

	pid = start_leaky_bg();
	printf(M " PID attach %d\n", (int)pid);
	snprintf(pidbuf, sizeof(pidbuf), "%d", (int)pid);
	/* With -v -v: its log names the event transport, and has the verifier's
	 * statistics of each BPF program and the load time. */
	rc = run("attach", 2, "--format", "json", "-p", pidbuf, "1", "2", NULL);
	printf(M " RC attach.target %d\n", stop_leaky_bg(pid));
	show("attach", "target-stderr", "/tmp/leaky-err");
	if (rc != 0) {
		pid = start_leaky_bg();
		snprintf(pidbuf, sizeof(pidbuf), "%d", (int)pid);
		run("attach.verbose", 2, "--format", "json", "-p", pidbuf, "1", "2", NULL);
		stop_leaky_bg(pid);
	}

	run("badpid", 0, "-p", "99999", NULL);

	/* Every allocation's stack unwound both in the kernel and in user space.
	 * The pauses let memleak cache the chain's rules after the first
	 * allocations (misses), so that the kernel walks the later ones and
	 * they are compared. */
	if (run("verify", 0, "--verify-unwind", "--format", "json", "--", "/leaky-dyn", "20",
		"30", NULL) != 0)
		run("verify.verbose", 1, "--verify-unwind", "--format", "json", "--", "/leaky-dyn",
		    "20", "30", NULL);

	/* The fallbacks for older kernels, forced: perf buffer and
	 * bpf_probe_read. With -v -v (so not repeated): its log names the
	 * variant it loaded, and has the verifier's statistics of that variant. */
	run("fallback", 2, "--events", "perfbuf", "--read-helper", "legacy", "--format", "json",
	    "--", "/leaky-dyn", "6", "0", NULL);

	/* tests/fixtures/src/musl_leak.c: leaks made inside musl's strdup,
	 * fopen and qsort (no CFI, no frame pointers), static and dynamic.
	 * With a command, memleak writes its reports to stderr unless
	 * --output - (the program's EXPECT lines are on stderr). */
#define MUSL_RUN(step, ...)                                                              \
	do {                                                                             \
		if (run(step, 0, "--format", "json", "--output", "-", "-T", "1000",       \
			__VA_ARGS__, NULL) != 0)                                         \
			run(step ".verbose", 1, "--format", "json", "--output", "-", "-T", \
			    "1000", __VA_ARGS__, NULL);                                  \
	} while (0)
	MUSL_RUN("musl-static", "--", "/musl-leak-static");
	MUSL_RUN("musl-dyn", "--", "/musl-leak-dyn");
	/* 300: the program pauses 300 ms after its first strdup, so that the
	 * kernel walks the other three over the rules cached for musl's code. */
	MUSL_RUN("musl-verify", "--verify-unwind", "--", "/musl-leak-dyn", "300");
	/* CFI and frame pointers alone: the stacks through strdup stop there. */
	MUSL_RUN("musl-cfifp", "--unwind", "cfi-fp", "--", "/musl-leak-static");
#undef MUSL_RUN

	/* Firmware stripped as OpenWrt strips it (/fw/sstrip_main and its
	 * /fw/libplugin.so, without section headers): the run recorded on the
	 * device (`record` is memleak's first argument, the extra options
	 * after it), and the recording printed in base64 for the host, which
	 * reports it (check.py: memleak report, with and without the
	 * unstripped build). */
	rc = run_sub("record", "record", 0, "--output", "/tmp/rec.mlr", "--", "/fw/sstrip_main",
		     "4", NULL);
	show_file("record", "recording", "/tmp/rec.mlr");
	if (rc != 0)
		run_sub("record.verbose", "record", 1, "--output", "/tmp/rec-v.mlr", "--",
			"/fw/sstrip_main", "4", NULL);

	finish();
	return 0;
}
