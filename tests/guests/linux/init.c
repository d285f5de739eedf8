/*
 * linux-init: the /init of the initramfs the Linux boot test gives the Debian kernel (a static
 * Linux program, no libc: raw system calls). It proves the kernel got all the way to user space
 * on tsvmm's machine, then reports what it sees and powers the machine off through ACPI:
 *   "tsvmm-init: hello from /init\n"
 *   "tsvmm-init: kernel <sysname> <release>\n"            (uname)
 *   "tsvmm-init: cpus <n>\n"                               (sched_getaffinity of pid 1: the CPUs online)
 * then reboot(LINUX_REBOOT_CMD_POWER_OFF), which Linux carries out by writing \_S5 to PM1a_CNT.
 * If that returns it prints "tsvmm-init: power-off failed (<-errno>)\n" and exits, which panics
 * the kernel (and with panic=-1 it reboots through the i8042).
 *
 * The kernel opens /dev/console (from its built-in initramfs) as fds 0-2 before it runs /init.
 * Spec: Linux syscall ABI for x86-64 (arch/x86/entry/syscalls/syscall_64.tbl), reboot(2).
 */
typedef unsigned long u64;

#define SYS_write 1
#define SYS_exit 60
#define SYS_uname 63
#define SYS_reboot 169
#define SYS_sched_getaffinity 204
#define LINUX_REBOOT_MAGIC1 0xfee1deadul
#define LINUX_REBOOT_MAGIC2 672274793ul
#define LINUX_REBOOT_CMD_POWER_OFF 0x4321fedcul

static long syscall4(long n, u64 a, u64 b, u64 c, u64 d) {
	long r;
	register u64 r10 __asm__("r10") = d;
	__asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
	return r;
}

static u64 length(const char *s) {
	u64 n = 0;
	while (s[n])
		n++;
	return n;
}

static void say(const char *s) { syscall4(SYS_write, 1, (u64)s, length(s), 0); }

static void say_dec(long v) {
	char buf[24];
	int i = sizeof buf;
	buf[--i] = 0;
	int negative = v < 0;
	u64 u = negative ? (u64)-v : (u64)v;
	do
		buf[--i] = (char)('0' + u % 10);
	while ((u /= 10) && i > 1);
	if (negative)
		buf[--i] = '-';
	say(&buf[i]);
}

/* struct utsname: six fields of 65 bytes. */
struct utsname {
	char sysname[65], nodename[65], release[65], version[65], machine[65], domainname[65];
};

void _start(void) {
	say("tsvmm-init: hello from /init\n");
	static struct utsname u;
	if (syscall4(SYS_uname, (u64)&u, 0, 0, 0) == 0) {
		say("tsvmm-init: kernel ");
		say(u.sysname);
		say(" ");
		say(u.release);
		say("\n");
	}
	static u64 mask[16]; /* 1024 CPUs */
	long bytes = syscall4(SYS_sched_getaffinity, 0, sizeof mask, (u64)mask, 0);
	long cpus = 0;
	for (long i = 0; i < bytes / 8; i++)
		for (u64 m = mask[i]; m; m &= m - 1)
			cpus++;
	say("tsvmm-init: cpus ");
	say_dec(bytes < 0 ? bytes : cpus);
	say("\n");
	long r = syscall4(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_POWER_OFF, 0);
	say("tsvmm-init: power-off failed (");
	say_dec(r);
	say(")\n");
	syscall4(SYS_exit, 1, 0, 0, 0);
	for (;;)
		;
}
