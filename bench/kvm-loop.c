/* The baseline for `npm run bench -- exits`: the smallest C VMM that boots a PVH ELF test guest
 * on KVM and serves its port I/O in a bare KVM_RUN loop, with the same platform tsvmm gives
 * (in-kernel irqchip and PIT, COM1 output, port 0x80 sink, debug-exit at 0xf4).
 * usage: kvm-loop GUEST.elf CMDLINE  -> prints "exits=N ns=T" (T: first KVM_RUN to guest exit)
 * Built by bench/build.ts with the system gcc; nothing here is shipped. */
#include <elf.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE (256ul << 20)
#define START_INFO 0x6000
#define CMDLINE 0x20000
#define GDT 0x500

static void die(const char *what) { perror(what); exit(70); }

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static uint32_t load_elf(uint8_t *ram, const uint8_t *img, size_t len) {
  uint32_t pvh = 0;
  const Elf64_Ehdr *e64 = (const void *)img;
  int is64 = img[EI_CLASS] == ELFCLASS64;
  unsigned phnum = is64 ? e64->e_phnum : ((const Elf32_Ehdr *)img)->e_phnum;
  for (unsigned i = 0; i < phnum; i++) {
    uint64_t type, off, paddr, filesz, memsz;
    if (is64) {
      const Elf64_Phdr *p = (const void *)(img + e64->e_phoff + i * e64->e_phentsize);
      type = p->p_type; off = p->p_offset; paddr = p->p_paddr; filesz = p->p_filesz; memsz = p->p_memsz;
    } else {
      const Elf32_Ehdr *e = (const void *)img;
      const Elf32_Phdr *p = (const void *)(img + e->e_phoff + i * e->e_phentsize);
      type = p->p_type; off = p->p_offset; paddr = p->p_paddr; filesz = p->p_filesz; memsz = p->p_memsz;
    }
    if (off + filesz > len) { fprintf(stderr, "bad ELF\n"); exit(70); }
    if (type == PT_LOAD) {
      memcpy(ram + paddr, img + off, filesz);
      memset(ram + paddr + filesz, 0, memsz - filesz);
    } else if (type == PT_NOTE) {
      for (uint64_t p = off; p + 12 <= off + filesz;) {
        uint32_t namesz = *(uint32_t *)(img + p), descsz = *(uint32_t *)(img + p + 4), ntype = *(uint32_t *)(img + p + 8);
        uint64_t desc = p + 12 + ((namesz + 3) & ~3u);
        if (ntype == 18 && namesz == 4 && !memcmp(img + p + 12, "Xen", 4)) pvh = *(uint32_t *)(img + desc);
        p = desc + ((descsz + 3) & ~3u);
      }
    }
  }
  return pvh;
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type) {
  memset(s, 0, sizeof *s);
  s->limit = 0xffffffff; s->selector = sel; s->type = type; s->present = 1; s->db = 1; s->s = 1; s->g = 1;
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: kvm-loop GUEST.elf CMDLINE\n"); return 64; }
  int f = open(argv[1], O_RDONLY);
  struct stat st;
  if (f < 0 || fstat(f, &st) < 0) die(argv[1]);
  uint8_t *img = malloc(st.st_size);
  if (read(f, img, st.st_size) != st.st_size) die("read");
  if (st.st_size < 64 || memcmp(img, ELFMAG, SELFMAG)) { fprintf(stderr, "%s: not an ELF image\n", argv[1]); return 64; }

  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) die("/dev/kvm");
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) die("KVM_CREATE_VM");
  ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000);
  uint64_t idmap = 0xfffbc000;
  ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &idmap);
  if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) die("KVM_CREATE_IRQCHIP");
  struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
  if (ioctl(vm, KVM_CREATE_PIT2, &pit) < 0) die("KVM_CREATE_PIT2");
  uint8_t *ram = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  struct kvm_userspace_memory_region region = { .slot = 0, .guest_phys_addr = 0, .memory_size = MEM_SIZE, .userspace_addr = (uint64_t)ram };
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");

  uint32_t entry = load_elf(ram, img, st.st_size);
  if (!entry) { fprintf(stderr, "no PVH note\n"); return 70; }
  strcpy((char *)ram + CMDLINE, argv[2]);
  /* struct hvm_start_info: magic 0, version 4, cmdline_paddr 24, memmap_paddr 40, memmap_entries 48 */
  uint32_t *si = (uint32_t *)(ram + START_INFO);
  si[0] = 0x336ec578; si[1] = 1;
  *(uint64_t *)(ram + START_INFO + 24) = CMDLINE;
  /* memmap: one RAM entry from 1 MiB, and low RAM */
  uint64_t *mm = (uint64_t *)(ram + START_INFO + 0x40);
  mm[0] = 0; mm[1] = 0x9fc00; mm[2] = 1;
  mm[3] = 0x100000; mm[4] = MEM_SIZE - 0x100000; mm[5] = 1;
  *(uint64_t *)(ram + START_INFO + 40) = START_INFO + 0x40;
  si[12] = 2;
  uint64_t gdt[] = { 0, 0, 0x00af9b000000ffffull, 0x00cf93000000ffffull, 0x00008b0000000067ull, 0x00cf9b000000ffffull };
  memcpy(ram + GDT, gdt, sizeof gdt);

  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) die("KVM_CREATE_VCPU");
  int runsz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run *run = mmap(NULL, runsz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  struct { struct kvm_cpuid2 h; struct kvm_cpuid_entry2 e[256]; } cpuid = { .h.nent = 256 };
  if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &cpuid) < 0) die("KVM_GET_SUPPORTED_CPUID");
  if (ioctl(vcpu, KVM_SET_CPUID2, &cpuid) < 0) die("KVM_SET_CPUID2");
  struct kvm_sregs sregs;
  ioctl(vcpu, KVM_GET_SREGS, &sregs);
  seg(&sregs.cs, 0x28, 0xb); seg(&sregs.ds, 0x18, 0x3); sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
  sregs.tr.base = 0; sregs.tr.limit = 0x67; sregs.tr.selector = 0x20; sregs.tr.type = 0xb; sregs.tr.present = 1; sregs.tr.s = 0; sregs.tr.g = 0;
  sregs.gdt.base = GDT; sregs.gdt.limit = sizeof gdt - 1; sregs.idt.base = 0x520; sregs.idt.limit = 0;
  sregs.cr0 = 0x11; sregs.cr3 = 0; sregs.cr4 = 0; sregs.efer = 0;
  if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
  struct kvm_regs regs = { .rip = entry, .rbx = START_INFO, .rflags = 2 };
  if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");

  uint64_t exits = 0, t0 = now_ns();
  for (;;) {
    if (ioctl(vcpu, KVM_RUN, 0) < 0) die("KVM_RUN");
    exits++;
    if (run->exit_reason != KVM_EXIT_IO) {
      if (run->exit_reason == KVM_EXIT_MMIO) { if (!run->mmio.is_write) memset(run->mmio.data, 0xff, 8); continue; }
      fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
      return 70;
    }
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    uint16_t port = run->io.port;
    if (run->io.direction == KVM_EXIT_IO_OUT) {
      if (port == 0xf4) break;
      if (port == 0x3f8) fwrite(data, 1, run->io.size * run->io.count, stdout);
    } else {
      memset(data, port == 0x3fd ? 0x60 : 0xff, run->io.size * run->io.count);
    }
  }
  uint64_t t1 = now_ns();
  fflush(stdout);
  fprintf(stderr, "exits=%llu ns=%llu\n", (unsigned long long)exits, (unsigned long long)(t1 - t0));
  return 0;
}
