/*
 * daemon/procstat.c - RSS, CPU time, threads and open descriptors of this process.
 */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "daemon/procstat.h"

static uint64_t procstat_threads(void)
{
    char line[256];
    unsigned long n = 0;
    FILE *f = fopen("/proc/self/status", "r");

    if (f == NULL) {
        return 0;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "Threads: %lu", &n) == 1) {
            break;
        }
    }
    fclose(f);
    return n;
}

static uint64_t procstat_fds(void)
{
    uint64_t n = 0;
    struct dirent *de;
    DIR *d = opendir("/proc/self/fd");

    if (d == NULL) {
        return 0;
    }
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n > 0 ? n - 1 : 0; /* the directory's own descriptor */
}

hsb_err procstat_read(procstat *out, int with_fds)
{
    struct rusage ru;
    unsigned long long vsz = 0, rss = 0;
    long page = sysconf(_SC_PAGESIZE);
    hsb_err err = HSB_OK;
    FILE *f;

    memset(out, 0, sizeof(*out));
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        out->cpu_seconds = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    }
    f = fopen("/proc/self/statm", "r");
    if (f != NULL && fscanf(f, "%llu %llu", &vsz, &rss) == 2 && page > 0) {
        out->vsize_bytes = (uint64_t)vsz * (uint64_t)page;
        out->rss_bytes = (uint64_t)rss * (uint64_t)page;
    } else {
        err = HSB_EIO;
    }
    if (f != NULL) {
        fclose(f);
    }
    out->threads = procstat_threads();
    if (with_fds) {
        out->open_fds = procstat_fds();
    }
    return err;
}
