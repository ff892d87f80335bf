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
 * N counts up by one per line; a test reads these lines to see that the guest is alive
 * (and, after a migration, that it kept running on the destination). The fields after
 * behind_ms are the guest's own truth for calibration (livemig calibrate):
 *   rate_mibps   MiB really written per second since the previous line (4 KiB per page
 *                write: what QEMU's dirty tracking sees), over the elapsed monotonic time;
 *   nonzero_mib  MemTotal - MemFree from /proc/meminfo: memory the guest kernel has in use
 *                (kernel data, initramfs files, the working set), an estimate of the
 *                non-zero memory QEMU sends in round 0 (pages never touched are zero);
 *   memfree_mib  MemFree itself, so that RAM - MemFree (which also counts the memory the
 *                kernel reserved before MemTotal) can be used instead.
 * Both memory figures are -1 when /proc/meminfo cannot be read.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PAGE 4096UL
#define TICK_NS 10000000L /* 10 ms */
#define NS 1000000000L

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

    size_t pages = (size_t)(ws_mib * 1024.0 * 1024.0 / PAGE);
    volatile uint8_t *ws = malloc(pages * PAGE);
    if (ws == NULL) {
        printf("livemig-dirtier: cannot allocate %.0f MiB\n", ws_mib);
        return 1;
    }
    for (size_t i = 0; i < pages * PAGE; i++)
        ws[i] = (uint8_t)(i * 2654435761u >> 24) | 1; /* non-zero, not a zero page */

    printf("livemig-dirtier: ready ws_mib=%.0f rate_mib=%g pages=%zu\n", ws_mib, rate_mib, pages);
    fflush(stdout);

    double pages_per_tick = rate_mib * 1024.0 * 1024.0 / PAGE * TICK_NS / NS;
    double credit = 0.0;
    size_t cursor = 0;
    uint8_t stamp = 1;
    unsigned long long dirtied = 0, tick_line = 0, dirtied_at_print = 0;
    long start = now_ns();
    long last_print = start;
    long next_tick = start + TICK_NS;
    long next_print = start + NS;

    for (;;) {
        credit += pages_per_tick;
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
        while ((now = now_ns()) < next_tick)
            ; /* busy-wait: CPU throttling slows the workload down */
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
            printf("tick %llu uptime=%.2f dirtied_mib=%.1f behind_ms=%ld rate_mibps=%.2f "
                   "nonzero_mib=%.1f memfree_mib=%.1f\n", tick_line,
                   (double)(now - start) / NS, (double)dirtied * PAGE / (1024.0 * 1024.0),
                   behind / 1000000L, rate, nonzero, memfree);
            fflush(stdout);
            dirtied_at_print = dirtied;
            last_print = now;
            next_print += NS;
            if (now >= next_print)
                next_print = now + NS;
        }
    }
}
