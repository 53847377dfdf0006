/*
 * benches/bench_stats.c - clocks, the log-bucket latency histogram and the shared sink page.
 *
 * The histogram keeps exact counts for 0..127 ns and, above, 64 sub-buckets per power of two (the
 * layout of HdrHistogram with 2 significant binary digits of 6 bits): a recorded value is reported
 * as the midpoint of its bucket, at most 1/128 (0.8 %) away from the truth. It covers the whole
 * uint64 range in 3712 counters (29 KiB), so recording never allocates and never saturates.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

uint64_t bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void bench_sleep_until(uint64_t t_ns)
{
    struct timespec ts = {.tv_sec = (time_t)(t_ns / 1000000000u),
                          .tv_nsec = (long)(t_ns % 1000000000u)};

    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static size_t bench_hist_index(uint64_t v)
{
    if (v < 2 * BENCH_HIST_SUB) {
        return (size_t)v;
    }
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - 6u; /* keeps the top 7 bits: 64..127 */
    return (size_t)shift * BENCH_HIST_SUB + (size_t)(v >> shift);
}

/* bench_hist_value returns the midpoint of bucket i. */
static double bench_hist_value(size_t i)
{
    if (i < 2 * BENCH_HIST_SUB) {
        return (double)i;
    }
    unsigned shift = (unsigned)(i / BENCH_HIST_SUB) - 1u;
    uint64_t mant = (uint64_t)(i % BENCH_HIST_SUB) + BENCH_HIST_SUB;
    return (double)(mant << shift) + (double)(1ull << shift) / 2.0;
}

void bench_hist_record(bench_hist *h, uint64_t ns)
{
    size_t i = bench_hist_index(ns);

    if (i >= BENCH_HIST_N) {
        i = BENCH_HIST_N - 1;
    }
    __atomic_fetch_add(&h->buckets[i], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->sum_ns, ns, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->count, 1, __ATOMIC_RELAXED);
    uint64_t m = __atomic_load_n(&h->max_ns, __ATOMIC_RELAXED);
    while (ns > m && !__atomic_compare_exchange_n(&h->max_ns, &m, ns, true, __ATOMIC_RELAXED,
                                                  __ATOMIC_RELAXED)) {
    }
}

void bench_hist_snapshot(bench_hist *dst, const bench_hist *src)
{
    dst->count = 0;
    for (size_t i = 0; i < BENCH_HIST_N; i++) {
        dst->buckets[i] = __atomic_load_n(&src->buckets[i], __ATOMIC_RELAXED);
        dst->count += dst->buckets[i];
    }
    dst->sum_ns = __atomic_load_n(&src->sum_ns, __ATOMIC_RELAXED);
    dst->max_ns = __atomic_load_n(&src->max_ns, __ATOMIC_RELAXED);
}

void bench_hist_sub(bench_hist *h, const bench_hist *earlier)
{
    h->count = 0;
    for (size_t i = 0; i < BENCH_HIST_N; i++) {
        h->buckets[i] -= earlier->buckets[i] <= h->buckets[i] ? earlier->buckets[i] : h->buckets[i];
        h->count += h->buckets[i];
    }
    h->sum_ns -= earlier->sum_ns <= h->sum_ns ? earlier->sum_ns : h->sum_ns;
}

void bench_hist_merge(bench_hist *dst, const bench_hist *src)
{
    for (size_t i = 0; i < BENCH_HIST_N; i++) {
        dst->buckets[i] += src->buckets[i];
    }
    dst->count += src->count;
    dst->sum_ns += src->sum_ns;
    if (src->max_ns > dst->max_ns) {
        dst->max_ns = src->max_ns;
    }
}

double bench_hist_pct(const bench_hist *h, double p)
{
    uint64_t n = 0;
    for (size_t i = 0; i < BENCH_HIST_N; i++) {
        n += h->buckets[i];
    }
    if (n == 0) {
        return 0.0;
    }
    uint64_t rank = (uint64_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1) {
        rank = 1;
    }
    if (rank > n) {
        rank = n;
    }
    uint64_t seen = 0;
    for (size_t i = 0; i < BENCH_HIST_N; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            double v = bench_hist_value(i);
            return h->max_ns > 0 && v > (double)h->max_ns ? (double)h->max_ns : v;
        }
    }
    return (double)h->max_ns;
}

double bench_hist_mean(const bench_hist *h)
{
    return h->count > 0 ? (double)h->sum_ns / (double)h->count : 0.0;
}

bench_shm *bench_shm_map(const char *path, bool create)
{
    int fd = open(path, create ? O_RDWR | O_CREAT | O_TRUNC : O_RDWR, 0600);
    bench_shm *shm = NULL;

    if (fd < 0) {
        perror(path);
        return NULL;
    }
    if (create && ftruncate(fd, (off_t)sizeof(bench_shm)) != 0) {
        perror(path);
        goto out;
    }
    void *p = mmap(NULL, sizeof(bench_shm), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        perror(path);
        goto out;
    }
    shm = p;
out:
    close(fd);
    return shm;
}

void bench_shm_unmap(bench_shm *shm)
{
    if (shm != NULL) {
        munmap(shm, sizeof(*shm));
    }
}

void bench_result_extra(bench_result *r, const char *key, double value)
{
    if (r->n_extra < BENCH_EXTRA_MAX) {
        snprintf(r->extra[r->n_extra].key, sizeof(r->extra[0].key), "%s", key);
        r->extra[r->n_extra].value = value;
        r->n_extra++;
    } else {
        fprintf(stderr, "hsbus-bench: %s: no room for extra field %s (BENCH_EXTRA_MAX %d)\n",
                r->name, key, BENCH_EXTRA_MAX);
    }
}
