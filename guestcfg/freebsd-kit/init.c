/*
 * xenpvh's /sbin/init for FreeBSD guests: freestanding C, raw FreeBSD system calls, no libc.
 * Built by Debian's clang for x86_64-unknown-freebsd and linked by lld (xenpvh.build.freebsdkit).
 *
 * It reports what the kernel gave it (release, CPUs, memory, root device) on the console and
 * offers a prompt there: `login: ` reads a line and greets it; `poweroff` powers the domain off.
 */

typedef unsigned long size_t;
typedef long ssize_t;

/* sys/sys/syscall.h (FreeBSD 13) */
#define SYS_exit 1
#define SYS_read 3
#define SYS_write 4
#define SYS_open 5
#define SYS_reboot 55
#define SYS_dup2 90
#define SYS_statfs 555
#define SYS___sysctlbyname 570
/* sys/sys/fcntl.h, sys/sys/reboot.h */
#define O_RDWR 2
#define RB_HALT 0x8
#define RB_POWEROFF 0x4000

static long sys6(long n, long a, long b, long c, long d, long e, long f)
{
	long ret;
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	unsigned char failed;

	/* amd64 FreeBSD: number in rax, arguments rdi rsi rdx r10 r8 r9; carry set = errno. */
	__asm__ volatile("syscall; setc %1"
	    : "=a"(ret), "=r"(failed)
	    : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
	    : "rcx", "r11", "memory", "cc");
	return failed ? -ret : ret;
}

#define sys3(n, a, b, c) sys6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)

static size_t len(const char *s)
{
	size_t n = 0;

	while (s[n] != '\0')
		n++;
	return n;
}

static void put(const char *s)
{
	sys3(SYS_write, 1, s, len(s));
}

static void put_num(unsigned long v)
{
	char buf[24];
	int i = sizeof(buf) - 1;

	buf[i] = '\0';
	do {
		buf[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0 && i > 0);
	put(&buf[i]);
}

static long sysctl(const char *name, void *out, size_t *outlen)
{
	return sys6(SYS___sysctlbyname, (long)name, (long)len(name), (long)out,
	    (long)outlen, 0, 0);
}

static void report_string(const char *label, const char *name)
{
	char buf[256];
	size_t n = sizeof(buf) - 1;

	put(label);
	if (sysctl(name, buf, &n) < 0) {
		put("?\n");
		return;
	}
	buf[n < sizeof(buf) ? n : sizeof(buf) - 1] = '\0';
	put(buf);
	put("\n");
}

static void report_number(const char *label, const char *name, int bytes)
{
	unsigned long v = 0;
	size_t n = (size_t)bytes;

	put(label);
	if (sysctl(name, &v, &n) < 0) {
		put("?\n");
		return;
	}
	if (bytes == 4)
		v &= 0xffffffffUL;
	put_num(v);
	put("\n");
}

/* The layout of FreeBSD 12+'s struct statfs (sys/sys/mount.h; MFSNAMELEN 16, MNAMELEN 1024). */
struct statfs_fbsd {
	unsigned int version, type;
	unsigned long flags, bsize, iosize, blocks, bfree, bavail, files, ffree;
	unsigned long syncwrites, asyncwrites, syncreads, asyncreads, spare[10];
	unsigned int namemax, owner;
	int fsid[2];
	char charspare[80];
	char fstypename[16];
	char mntfromname[1024];
	char mntonname[1024];
};

static void report_root(void)
{
	static struct statfs_fbsd st;

	put("xenpvh-init: root: ");
	if (sys3(SYS_statfs, "/", &st, 0) < 0) {
		put("?\n");
		return;
	}
	st.fstypename[sizeof(st.fstypename) - 1] = '\0';
	st.mntfromname[sizeof(st.mntfromname) - 1] = '\0';
	put(st.fstypename);
	put(" ");
	put(st.mntfromname);
	put("\n");
}

static int same(const char *a, const char *b)
{
	while (*a != '\0' && *a == *b) {
		a++;
		b++;
	}
	return *a == *b;
}

void init_main(void) __attribute__((noreturn, used));

/* The kernel enters with %rsp at argc; C code wants %rsp + 8 16-byte aligned at entry. */
__asm__(".globl _start\n_start:\n\tandq $-16, %rsp\n\tcall init_main\n\thlt\n");

void init_main(void)
{
	char line[128];
	long fd, n;

	/* The kernel starts init with no descriptors: the console becomes 0, 1 and 2. */
	fd = sys3(SYS_open, "/dev/console", O_RDWR, 0);
	if (fd < 0)
		sys3(SYS_exit, 1, 0, 0);
	sys3(SYS_dup2, fd, 0, 0);
	sys3(SYS_dup2, fd, 1, 0);
	sys3(SYS_dup2, fd, 2, 0);

	put("xenpvh-init: started as pid 1\n");
	report_string("xenpvh-init: kernel: ", "kern.version");
	report_number("xenpvh-init: cpus: ", "kern.smp.cpus", 4);
	report_number("xenpvh-init: physmem: ", "hw.physmem", 8);
	report_root();
	for (;;) {
		put("\nlogin: ");
		n = sys3(SYS_read, 0, line, sizeof(line) - 1);
		if (n <= 0)
			break;
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			n--;
		line[n] = '\0';
		if (same(line, "poweroff"))
			sys3(SYS_reboot, RB_POWEROFF | RB_HALT, 0, 0);
		put("xenpvh-init: hello, ");
		put(line);
		put("\n");
	}
	sys3(SYS_reboot, RB_POWEROFF | RB_HALT, 0, 0);
	for (;;)
		;
}
