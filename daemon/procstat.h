/*
 * daemon/procstat.h - the daemon's own resource use, read from /proc/self and getrusage(2), for
 * /metrics, /healthz, `hsbusctl status` and the memory alert.
 *
 * Threads: any thread. procstat_read reads two small procfs files (no disk I/O: procfs is served
 * by the kernel from memory), so it is cheap enough for the loop thread's once-per-interval tick.
 */
#ifndef HSB_DAEMON_PROCSTAT_H
#define HSB_DAEMON_PROCSTAT_H

#include <stdint.h>

#include "proto/err.h"

typedef struct procstat {
    uint64_t rss_bytes;   /* resident set size */
    uint64_t vsize_bytes; /* virtual memory size */
    double cpu_seconds;   /* user + system CPU time of the whole process */
    uint64_t open_fds;    /* file descriptors open; 0 when with_fds was false */
    uint64_t threads;     /* threads of the process */
} procstat;

/*
 * procstat_read fills *out. with_fds also counts /proc/self/fd (a directory walk: keep it off the
 * loop thread). Fields it cannot read are left 0. Errors: HSB_EIO when /proc/self/statm cannot be
 * read (no procfs); the CPU time is filled even then.
 */
hsb_err procstat_read(procstat *out, int with_fds);

#endif /* HSB_DAEMON_PROCSTAT_H */
