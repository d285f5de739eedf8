/*
 * linux-init: the /init of the initramfs the Linux boot test gives the Debian kernel (a static
 * Linux program, no libc: raw system calls). It proves the kernel got all the way to user space
 * on tsvmm's machine, then reports what it sees and powers the machine off through ACPI:
 *   "tsvmm-init: hello from /init\n"
 *   "tsvmm-init: kernel <sysname> <release>\n"            (uname)
 *   "tsvmm-init: cpus <n>\n"                               (sched_getaffinity of pid 1: the CPUs online)
 * When the initramfs carries kernel modules in /lib/modules (the virtio test packs Debian's own
 * virtio drivers there), it loads those of MODULES that are present (in passes, whatever their
 * dependencies), mounts devtmpfs on /dev and uses what the drivers found:
 *   "tsvmm-init: module <file> <0 or -errno>\n"
 *   "tsvmm-init: vda device <where /sys/block/vda links to: the bus that carries the disk>\n"
 *   "tsvmm-init: irq <each line of /proc/interrupts that names virtio>\n"
 *   "tsvmm-init: vda sector0 <the first bytes of sector 0 up to NUL or newline>\n"   (/dev/vda, virtio_blk)
 *   "tsvmm-init: vda wrote <bytes or -errno> fsync <0 or -errno>\n"   (WRITE_MARK at byte WRITE_OFFSET)
 *   "tsvmm-init: vda discard <0 or -errno>\n"             (BLKDISCARD of DISCARD_BYTES at DISCARD_OFFSET)
 *   "tsvmm-init: hwrng <bytes or -errno> bytes\n"                      (/dev/hwrng, virtio-rng)
 *   "tsvmm-init: hvc0 <bytes or -errno>\n"                             (HVC_MARK written to /dev/hvc0, virtio_console)
 * then reboot(LINUX_REBOOT_CMD_POWER_OFF), which Linux carries out by writing \_S5 to PM1a_CNT.
 * If that returns it prints "tsvmm-init: power-off failed (<-errno>)\n" and exits, which panics
 * the kernel (and with panic=-1 it reboots through the i8042).
 *
 * The kernel opens /dev/console (from its built-in initramfs) as fds 0-2 before it runs /init.
 * Spec: Linux syscall ABI for x86-64 (arch/x86/entry/syscalls/syscall_64.tbl), reboot(2).
 */
typedef unsigned long u64;

#define SYS_read 0
#define SYS_write 1
#define SYS_open 2
#define SYS_close 3
#define SYS_pread64 17
#define SYS_pwrite64 18
#define SYS_exit 60
#define SYS_fsync 74
#define SYS_readlink 89
#define SYS_ioctl 16
#define SYS_mount 165
#define SYS_finit_module 313
#define O_RDONLY 0
#define O_WRONLY 1
#define O_RDWR 2
#define ENOENT 2
#define SYS_uname 63
#define SYS_reboot 169
#define SYS_sched_getaffinity 204
#define LINUX_REBOOT_MAGIC1 0xfee1deadul
#define LINUX_REBOOT_MAGIC2 672274793ul
#define LINUX_REBOOT_CMD_POWER_OFF 0x4321fedcul

static long syscall5(long n, u64 a, u64 b, u64 c, u64 d, u64 e) {
	long r;
	register u64 r10 __asm__("r10") = d;
	register u64 r8 __asm__("r8") = e;
	__asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8) : "rcx", "r11", "memory");
	return r;
}

static long syscall4(long n, u64 a, u64 b, u64 c, u64 d) { return syscall5(n, a, b, c, d, 0); }

/* Written by the virtio test's host side into the disk image and checked there afterwards. */
#define WRITE_OFFSET 4096
/* linux/fs.h: BLKDISCARD = _IO(0x12, 119), takes u64 {start, length} in bytes. */
#define BLKDISCARD 0x1277
#define DISCARD_OFFSET 65536
#define DISCARD_BYTES 65536
#define WRITE_MARK "tsvmm-init: written by Linux's virtio_blk\n"
#define HVC_MARK "tsvmm-init: hello through hvc0\n"

/*
 * Debian's virtio drivers. Their dependencies differ between kernel builds (6.1.0-57's virtio.ko
 * needs virtio_ring.ko, and a fixed order once had it first), so load_modules retries in passes
 * instead of trusting an order: a module whose dependency is missing fails with -ENOENT ("Unknown symbol")
 * and loads in a later pass.
 */
static const char *const MODULES[] = {
	"virtio_ring.ko", "virtio.ko", "virtio_mmio.ko", "virtio_pci_modern_dev.ko", "virtio_pci_legacy_dev.ko", "virtio_pci.ko",
	"virtio_blk.ko", "virtio-rng.ko", "virtio_console.ko",
};
#define N_MODULES (sizeof MODULES / sizeof MODULES[0])

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

static void say_chars(const char *s, long n) { syscall4(SYS_write, 1, (u64)s, n, 0); }

static void say_result(const char *what, long r, const char *end) {
	say(what);
	say_dec(r);
	say(end);
}

/* Opens /lib/modules/<name>: a file descriptor, or -errno. */
static long open_module(const char *name) {
	static char path[64];
	const char *prefix = "/lib/modules/";
	u64 n = 0;
	for (const char *p = prefix; *p; p++)
		path[n++] = *p;
	for (const char *p = name; *p && n < sizeof path - 1; p++)
		path[n++] = *p;
	path[n] = 0;
	return syscall4(SYS_open, (u64)path, O_RDONLY, 0, 0);
}

/*
 * Loads the modules the initramfs carries, in passes until one loads nothing more, then reports
 * each module's last result; returns how many it found.
 */
static int load_modules(void) {
	long result[N_MODULES];
	int found = 0;
	for (unsigned i = 0; i < N_MODULES; i++) {
		long fd = open_module(MODULES[i]);
		result[i] = fd == -ENOENT ? 1 : -1; /* 1: absent, never tried */
		if (fd >= 0) {
			found++;
			syscall4(SYS_close, fd, 0, 0, 0);
		}
	}
	for (int progress = 1; progress;) {
		progress = 0;
		for (unsigned i = 0; i < N_MODULES; i++) {
			if (result[i] >= 0)
				continue; /* absent or loaded */
			long fd = open_module(MODULES[i]);
			long r = fd < 0 ? fd : syscall4(SYS_finit_module, fd, (u64) "", 0, 0);
			if (fd >= 0)
				syscall4(SYS_close, fd, 0, 0, 0);
			result[i] = r;
			if (r == 0)
				progress = 1;
		}
	}
	for (unsigned i = 0; i < N_MODULES; i++) {
		if (result[i] == 1)
			continue;
		say("tsvmm-init: module ");
		say(MODULES[i]);
		say_result(" ", result[i], "\n");
	}
	return found;
}

static void mount_fs(const char *type, const char *at) {
	long r = syscall5(SYS_mount, (u64)type, (u64)at, (u64)type, 0, 0);
	if (r < 0) {
		say("tsvmm-init: mount ");
		say(type);
		say_result(" ", r, "\n");
	}
}

/* Which bus the disk sits on, and the virtio interrupts (MSI-X over PCI, IO-APIC lines over mmio). */
static void report_virtio_topology(void) {
	static char buf[8192];
	long n = syscall4(SYS_readlink, (u64) "/sys/block/vda", (u64)buf, sizeof buf - 1, 0);
	if (n > 0) {
		say("tsvmm-init: vda device ");
		say_chars(buf, n);
		say("\n");
	}
	long fd = syscall4(SYS_open, (u64) "/proc/interrupts", O_RDONLY, 0, 0);
	if (fd < 0)
		return;
	n = syscall4(SYS_read, fd, (u64)buf, sizeof buf - 1, 0);
	syscall4(SYS_close, fd, 0, 0, 0);
	for (long start = 0, i = 0; i < n; i++) {
		if (buf[i] != '\n')
			continue;
		int named = 0;
		for (long j = start; j + 6 <= i && !named; j++)
			named = buf[j] == 'v' && buf[j + 1] == 'i' && buf[j + 2] == 'r' && buf[j + 3] == 't' && buf[j + 4] == 'i' && buf[j + 5] == 'o';
		if (named) {
			say("tsvmm-init: irq ");
			say_chars(buf + start, i + 1 - start);
		}
		start = i + 1;
	}
}

/* Uses the block, rng and console devices the virtio drivers registered. */
static void use_virtio_devices(void) {
	mount_fs("devtmpfs", "/dev");
	mount_fs("sysfs", "/sys");
	mount_fs("proc", "/proc");
	report_virtio_topology();
	long fd = syscall4(SYS_open, (u64) "/dev/vda", O_RDWR, 0, 0);
	if (fd >= 0) {
		static char sector[512];
		long n = syscall4(SYS_pread64, fd, (u64)sector, sizeof sector, 0);
		long shown = 0;
		while (shown < n && shown < 64 && sector[shown] != 0 && sector[shown] != '\n')
			shown++;
		say("tsvmm-init: vda sector0 ");
		if (n < 0)
			say_dec(n);
		else
			say_chars(sector, shown);
		say("\n");
		long w = syscall4(SYS_pwrite64, fd, (u64)WRITE_MARK, length(WRITE_MARK), WRITE_OFFSET);
		long s = syscall4(SYS_fsync, fd, 0, 0, 0);
		say_result("tsvmm-init: vda wrote ", w, "");
		say_result(" fsync ", s, "\n");
		static unsigned long range[2] = {DISCARD_OFFSET, DISCARD_BYTES};
		say_result("tsvmm-init: vda discard ", syscall4(SYS_ioctl, fd, BLKDISCARD, (u64)range, 0), "\n");
		syscall4(SYS_close, fd, 0, 0, 0);
	} else if (fd != -ENOENT)
		say_result("tsvmm-init: vda open ", fd, "\n");
	fd = syscall4(SYS_open, (u64) "/dev/hwrng", O_RDONLY, 0, 0);
	if (fd >= 0) {
		static char random[16];
		say_result("tsvmm-init: hwrng ", syscall4(SYS_read, fd, (u64)random, sizeof random, 0), " bytes\n");
		syscall4(SYS_close, fd, 0, 0, 0);
	}
	fd = syscall4(SYS_open, (u64) "/dev/hvc0", O_WRONLY, 0, 0);
	if (fd >= 0) {
		say_result("tsvmm-init: hvc0 ", syscall4(SYS_write, fd, (u64)HVC_MARK, length(HVC_MARK), 0), "\n");
		syscall4(SYS_close, fd, 0, 0, 0);
	}
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
	if (load_modules() > 0)
		use_virtio_devices();
	long r = syscall4(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_POWER_OFF, 0);
	say("tsvmm-init: power-off failed (");
	say_dec(r);
	say(")\n");
	syscall4(SYS_exit, 1, 0, 0, 0);
	for (;;)
		;
}
