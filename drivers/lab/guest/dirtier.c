/*
 * livemig guest workload: dirty guest memory at a steady rate.
 *
 * Reads "livemig.ws_mib=W" and "livemig.rate_mib=R" from /proc/cmdline, fills a working
 * set of W MiB (every page written, with non-zero data), then writes one byte per 4 KiB
 * page at R MiB/s, walking the working set round-robin, in 10 ms ticks. Pacing is a
 * busy-wait on CLOCK_MONOTONIC, so the program is CPU-bound like a real dirtying workload
 * and slows down when the vCPU is throttled (auto-converge): ticks lost while the vCPU
 * did not run are not made up for.
 *
 * Once per second it prints on stdout (the serial console):
 *   tick N uptime=S.SS dirtied_mib=D behind_ms=B rate_mibps=W nonzero_mib=Z memfree_mib=F
 *   ... cpu_pct=C cpu_target=T wake_late_pct=L
 * N counts up by one per line; a test reads these lines to see that the guest is alive
 * (and, after a migration, that it kept running on the destination). The fields after
 * behind_ms are the guest's own truth for calibration (livemig calibrate):
 *   rate_mibps   MiB really written per second since the previous line (4 KiB per page
 *                write: what QEMU's dirty tracking sees), over the elapsed monotonic time;
 *   nonzero_mib  MemTotal - MemFree from /proc/meminfo: memory the guest kernel has in use
 *                (kernel data, initramfs files, the working set), an estimate of the
 *                non-zero memory QEMU sends in round 0 (pages never touched are zero;
 *                free pages with old contents are missed: see the scan line below);
 *   memfree_mib  MemFree itself, so that RAM - MemFree (which also counts the memory the
 *                kernel reserved before MemTotal) can be used instead.
 *   cpu_pct      percent of the time since the previous line that the program did not
 *                sleep (busy-waiting or writing), on the guest's monotonic clock: the
 *                CPU utilisation the guest sees (under TCG the host may run the vCPU less);
 *   cpu_target   the utilisation asked for at this moment (percent, see below);
 *   wake_late_pct  percent of the time the program's wake-ups came later than asked (the
 *                vCPU was runnable, by the host's account, but the program not yet
 *                running): cpu_pct + wake_late_pct is the share the vCPU was runnable.
 * Both memory figures are -1 when /proc/meminfo cannot be read.
 *
 * Non-zero pages. Free pages are not zero pages: the initramfs unpacked then freed, page
 * cache dropped ... keep their old contents, and QEMU's round 0 sends every page that is
 * not all zero. So once, after the working set is filled and before the first tick line
 * (the lab waits for a tick before it migrates), the program reads the guest's physical RAM
 * through /proc/kcore and counts the 4 KiB pages that are not all zero, and prints
 *   scan nonzero_mib=Z scanned_mib=S segments=N took_s=T
 * or, when /proc/kcore cannot be read (no CONFIG_PROC_KCORE, lockdown ...),
 *   scan error=WHAT errno=E
 * /proc/kcore is an ELF64 core file; fs/proc/kcore.c gives each RAM range of the kernel's
 * list ("System RAM" on x86) a PT_LOAD segment at its direct-map address with p_paddr the
 * physical address; the kernel text segment also has a p_paddr (its pages are in those
 * RAM ranges too) and every other segment (vmalloc, vmemmap ...) has p_paddr = -1. The RAM
 * segments are the ones with a p_paddr whose p_vaddr is below the kernel text mapping
 * (__START_KERNEL_map). Reading a RAM page the kernel cannot read gives zeros.
 * Right after it, where in RAM those pages lie, in the order QEMU's round 0 walks them:
 *   layout slices=N nonzero=S1,S2,...,SN
 * the RAM segments laid end to end by physical address (so a hole, the PCI one of a guest
 * over 3 GiB included, takes no room) and cut in N = LAYOUT_SLICES equal slices; Si is the
 * share of slice i's 4 KiB pages that are not all zero (0.000-1.000), lowest address first.
 *
 * CPU load. "livemig.cpu_trace=P0,P1,..." (percent of the vCPU, 0-100, at most MAX_TRACE
 * samples) with "livemig.cpu_interval=S" (seconds between samples) makes the program burn
 * CPU following that trace: the target at t seconds since the working set was filled is
 * linear between samples, the last sample holds after the end. Each 100 ms period is then
 * busy (10 ms ticks of writes and busy-waiting) for target x 100 ms, and asleep
 * (clock_nanosleep) for the rest: the vCPU halts while the program sleeps. The writes of the
 * ticks slept through are made up for on waking, so the dirty rate stays as asked. A period
 * of 100 ms rather than one per tick: each wake-up costs the host CPU under TCG and waits
 * for a host CPU on a busy machine (seen: 10 ms periods added ~3 % to an idle guest and
 * ~12 % to a 20 % guest's host-side CPU). Without a trace the program busy-waits through
 * every tick, as before (cpu_target=100).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#define PAGE 4096UL
#define TICK_NS 10000000L /* 10 ms */
#define NS 1000000000L
#define MAX_TRACE 1024
#define PERIOD_NS 100000000L /* 100 ms: busy, then asleep, once per period */

static double trace[MAX_TRACE]; /* fractions of the vCPU, 0..1 */
static int trace_len;
static double trace_interval_s;

/* MemTotal and MemFree of /proc/meminfo in KiB; -1 each when unreadable. */
static void meminfo_kib(long *total, long *free_kib)
{
    char line[128];
    *total = -1;
    *free_kib = -1;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "MemTotal:", 9) == 0)
            *total = strtol(line + 9, NULL, 10);
        else if (strncmp(line, "MemFree:", 8) == 0)
            *free_kib = strtol(line + 8, NULL, 10);
    }
    fclose(f);
}

#define KERNEL_TEXT_MAP 0xffffffff80000000ULL /* x86-64 __START_KERNEL_map */
#define SCAN_CHUNK (1UL << 20)
#define LAYOUT_SLICES 32

/* Order of two RAM program headers by physical address (qsort). */
static int by_paddr(const void *a, const void *b)
{
    Elf64_Addr x = ((const Elf64_Phdr *)a)->p_paddr, y = ((const Elf64_Phdr *)b)->p_paddr;
    return x < y ? -1 : x > y;
}

/* 1 when the 4 KiB page at p is all zero bytes. */
static int page_is_zero(const uint64_t *p)
{
    for (size_t i = 0; i < PAGE / sizeof(uint64_t); i++)
        if (p[i] != 0)
            return 0;
    return 1;
}

static long now_ns(void);

/* Count the non-zero 4 KiB pages of the guest's RAM through /proc/kcore (module comment)
 * and print the "scan" line. */
static void scan_nonzero(void)
{
    long t0 = now_ns();
    int fd = open("/proc/kcore", O_RDONLY);
    if (fd < 0) {
        printf("scan error=open-proc-kcore errno=%d\n", errno);
        return;
    }
    Elf64_Ehdr eh;
    if (pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh) ||
        memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
        eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0) {
        printf("scan error=bad-elf-header errno=%d\n", errno);
        close(fd);
        return;
    }
    size_t ph_bytes = (size_t)eh.e_phnum * sizeof(Elf64_Phdr);
    Elf64_Phdr *ph = malloc(ph_bytes);
    uint64_t *buf = aligned_alloc(PAGE, SCAN_CHUNK);
    if (ph == NULL || buf == NULL ||
        pread(fd, ph, ph_bytes, (off_t)eh.e_phoff) != (ssize_t)ph_bytes) {
        printf("scan error=program-headers errno=%d\n", errno);
        free(ph);
        free(buf);
        close(fd);
        return;
    }
    unsigned long long scanned = 0, nonzero = 0, ram_pages = 0;
    unsigned long long slice_nonzero[LAYOUT_SLICES] = {0};
    int segments = 0, failed = 0;
    for (int i = 0; i < eh.e_phnum; i++) { /* keep the RAM ranges, by physical address */
        const Elf64_Phdr *p = &ph[i];
        if (p->p_type != PT_LOAD || p->p_paddr == (Elf64_Addr)-1 || p->p_vaddr >= KERNEL_TEXT_MAP)
            continue; /* not a RAM range of the direct map */
        ph[segments++] = *p;
        ram_pages += p->p_memsz / PAGE;
    }
    qsort(ph, (size_t)segments, sizeof(Elf64_Phdr), by_paddr);
    unsigned long long slice_pages = (ram_pages + LAYOUT_SLICES - 1) / LAYOUT_SLICES;
    if (slice_pages == 0)
        slice_pages = 1;
    for (int i = 0; i < segments && !failed; i++) {
        const Elf64_Phdr *p = &ph[i];
        for (uint64_t done = 0; done < p->p_memsz;) {
            uint64_t want = p->p_memsz - done < SCAN_CHUNK ? p->p_memsz - done : SCAN_CHUNK;
            ssize_t got = pread(fd, buf, want, (off_t)(p->p_offset + done));
            if (got <= 0) {
                printf("scan error=read-segment errno=%d vaddr=0x%llx\n", got < 0 ? errno : 0,
                       (unsigned long long)(p->p_vaddr + done));
                failed = 1;
                break;
            }
            size_t pages_read = (size_t)got / PAGE; /* a partial page is read again */
            if (pages_read == 0) {
                printf("scan error=short-read errno=0 vaddr=0x%llx\n",
                       (unsigned long long)(p->p_vaddr + done));
                failed = 1;
                break;
            }
            for (size_t k = 0; k < pages_read; k++) {
                int used = !page_is_zero(buf + k * (PAGE / sizeof(uint64_t)));
                nonzero += used;
                unsigned long long slice = (scanned + k) / slice_pages;
                slice_nonzero[slice < LAYOUT_SLICES ? slice : LAYOUT_SLICES - 1] += used;
            }
            scanned += pages_read;
            done += (uint64_t)pages_read * PAGE;
        }
    }
    if (!failed && segments == 0)
        printf("scan error=no-ram-segments errno=0\n");
    else if (!failed)
        printf("scan nonzero_mib=%.1f scanned_mib=%.1f segments=%d took_s=%.2f\n",
               (double)nonzero * PAGE / (1024.0 * 1024.0),
               (double)scanned * PAGE / (1024.0 * 1024.0), segments,
               (double)(now_ns() - t0) / NS);
    if (!failed && segments > 0) {
        printf("layout slices=%d nonzero=", LAYOUT_SLICES);
        for (int i = 0; i < LAYOUT_SLICES; i++) {
            unsigned long long first = (unsigned long long)i * slice_pages;
            unsigned long long size = first >= ram_pages ? 0
                : (ram_pages - first < slice_pages ? ram_pages - first : slice_pages);
            printf("%s%.3f", i ? "," : "", size ? (double)slice_nonzero[i] / (double)size : 0.0);
        }
        printf("\n");
    }
    free(ph);
    free(buf);
    close(fd);
}

static long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * NS + ts.tv_nsec;
}

/* Value of "key=" on the kernel command line, or def when absent or unreadable. */
static double cmdline_value(const char *cmdline, const char *key, double def)
{
    size_t klen = strlen(key);
    const char *p = cmdline;
    while ((p = strstr(p, key)) != NULL) {
        if ((p == cmdline || p[-1] == ' ') && p[klen] == '=')
            return strtod(p + klen + 1, NULL);
        p += klen;
    }
    return def;
}

/* The comma-separated numbers of "key=" (percent) into trace[], as fractions in 0..1. */
static void parse_trace(const char *cmdline, const char *key)
{
    size_t klen = strlen(key);
    const char *p = cmdline;
    while ((p = strstr(p, key)) != NULL) {
        if ((p == cmdline || p[-1] == ' ') && p[klen] == '=')
            break;
        p += klen;
    }
    if (p == NULL)
        return;
    p += klen + 1;
    while (trace_len < MAX_TRACE) {
        char *end;
        double v = strtod(p, &end);
        if (end == p)
            break;
        v = v < 0.0 ? 0.0 : v > 100.0 ? 100.0 : v;
        trace[trace_len++] = v / 100.0;
        if (*end != ',')
            break;
        p = end + 1;
    }
}

/* The CPU share asked for t seconds into the run: linear between samples, the last holds. */
static double load_at(double t)
{
    if (trace_len == 0)
        return 1.0;
    if (t <= 0.0 || trace_len == 1 || trace_interval_s <= 0.0)
        return trace[0];
    double x = t / trace_interval_s;
    if (x >= (double)(trace_len - 1))
        return trace[trace_len - 1];
    int i = (int)x;
    return trace[i] + (trace[i + 1] - trace[i]) * (x - (double)i);
}

int main(void)
{
    char cmdline[4096] = "";
    FILE *f = fopen("/proc/cmdline", "r");
    if (f) {
        size_t n = fread(cmdline, 1, sizeof(cmdline) - 1, f);
        cmdline[n] = '\0';
        fclose(f);
    }
    double ws_mib = cmdline_value(cmdline, "livemig.ws_mib", 16.0);
    double rate_mib = cmdline_value(cmdline, "livemig.rate_mib", 0.0);
    if (ws_mib < 1.0)
        ws_mib = 1.0;
    if (rate_mib < 0.0)
        rate_mib = 0.0;
    parse_trace(cmdline, "livemig.cpu_trace");
    trace_interval_s = cmdline_value(cmdline, "livemig.cpu_interval", 0.0);

    size_t pages = (size_t)(ws_mib * 1024.0 * 1024.0 / PAGE);
    volatile uint8_t *ws = malloc(pages * PAGE);
    if (ws == NULL) {
        printf("livemig-dirtier: cannot allocate %.0f MiB\n", ws_mib);
        return 1;
    }
    for (size_t i = 0; i < pages * PAGE; i++)
        ws[i] = (uint8_t)(i * 2654435761u >> 24) | 1; /* non-zero, not a zero page */

    printf("livemig-dirtier: ready ws_mib=%.0f rate_mib=%g pages=%zu cpu_trace_samples=%d "
           "cpu_interval=%g\n", ws_mib, rate_mib, pages, trace_len, trace_interval_s);
    fflush(stdout);
    scan_nonzero();
    fflush(stdout);

    double pages_per_tick = rate_mib * 1024.0 * 1024.0 / PAGE * TICK_NS / NS;
    double credit = 0.0;
    size_t cursor = 0;
    uint8_t stamp = 1;
    unsigned long long dirtied = 0, tick_line = 0, dirtied_at_print = 0;
    long slept = 0, slept_at_print = 0; /* ns spent in clock_nanosleep */
    long late = 0, late_at_print = 0;   /* ns of it past the wake-up time asked for */
    double target = 1.0;
    long start = now_ns();
    long last_print = start;
    long next_tick = start + TICK_NS;
    long next_print = start + NS;

    long ticks_due = 1; /* ticks whose writes are due: more than one after a sleep */
    for (;;) {
        credit += pages_per_tick * (double)ticks_due;
        while (credit >= 1.0) {
            ws[cursor * PAGE] = stamp;
            credit -= 1.0;
            dirtied++;
            if (++cursor == pages) {
                cursor = 0;
                stamp = (uint8_t)(stamp + 1) | 1;
            }
        }
        long now;
        long tick_start = next_tick - TICK_NS;
        long period_start = start + (tick_start - start) / PERIOD_NS * PERIOD_NS;
        target = load_at((double)(period_start - start) / NS);
        long busy_end = period_start + (long)(target * PERIOD_NS);
        ticks_due = 1;
        if (target >= 1.0 || next_tick <= busy_end) {
            while ((now = now_ns()) < next_tick)
                ; /* busy-wait: CPU throttling slows the workload down */
        } else {
            while ((now = now_ns()) < busy_end)
                ; /* the rest of the period's busy share */
            long period_end = period_start + PERIOD_NS;
            if (now < period_end) {
                struct timespec ts = {.tv_sec = period_end / NS, .tv_nsec = period_end % NS};
                while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0)
                    ; /* EINTR: sleep on */
                long woke = now_ns();
                slept += woke - now;
                if (woke > period_end)
                    late += woke - period_end;
                now = woke;
            }
            /* the writes of the ticks slept through are made up for: a trace lowers the
             * CPU, not the dirty rate */
            if (period_end > next_tick) {
                ticks_due += (period_end - next_tick) / TICK_NS;
                next_tick = period_end;
            }
        }
        long behind = now - next_tick;
        /* Never catch up on ticks lost while the vCPU did not run (QEMU's auto-converge
         * throttle sleeps it for up to 990 ms of every second; the pause at switchover):
         * the workload dirties memory in proportion to the CPU it gets, as a CPU-bound
         * one does. */
        next_tick = behind > TICK_NS ? now + TICK_NS : next_tick + TICK_NS;
        if (now >= next_print) {
            tick_line++;
            long total_kib, free_kib;
            meminfo_kib(&total_kib, &free_kib);
            double rate = (double)(dirtied - dirtied_at_print) * PAGE / (1024.0 * 1024.0) /
                          ((double)(now - last_print) / NS);
            double nonzero = total_kib < 0 || free_kib < 0 ? -1.0 : (total_kib - free_kib) / 1024.0;
            double memfree = free_kib < 0 ? -1.0 : free_kib / 1024.0;
            double elapsed = (double)(now - last_print);
            double cpu = 100.0 * (1.0 - (double)(slept - slept_at_print) / elapsed);
            double wake_late = 100.0 * (double)(late - late_at_print) / elapsed;
            printf("tick %llu uptime=%.2f dirtied_mib=%.1f behind_ms=%ld rate_mibps=%.2f "
                   "nonzero_mib=%.1f memfree_mib=%.1f cpu_pct=%.1f cpu_target=%.1f "
                   "wake_late_pct=%.1f\n", tick_line,
                   (double)(now - start) / NS, (double)dirtied * PAGE / (1024.0 * 1024.0),
                   behind / 1000000L, rate, nonzero, memfree, cpu, 100.0 * target, wake_late);
            fflush(stdout);
            dirtied_at_print = dirtied;
            slept_at_print = slept;
            late_at_print = late;
            last_print = now;
            next_print += NS;
            if (now >= next_print)
                next_print = now + NS;
        }
    }
}
