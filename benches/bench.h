/*
 * benches/bench.h - the modules of hsbus-bench (one program, several files).
 *
 *   bench_stats.c  log-bucket latency histogram (HDR-like, < 1.6 % error), clocks, shared counters
 *   bench_ref.c    the raw nng REQ/REP echo reference (server role and 16-in-flight client)
 *   bench_work.c   workloads, seed scenarios and the agent roles (echo-agent, sink)
 *   bench_out.c    progress line, summary table, JSON, gnuplot plot, baseline gate
 *   hsbus_bench.c  command line, daemon and child-process management
 *
 * Threads. Histograms and the live counters are updated with relaxed atomic adds, so any thread
 * (and, for a histogram in a shared mapping, any process) may record at once; readers take a
 * snapshot that may be a few samples behind. Nothing here blocks except where a function says so.
 * Errors. Functions that can fail return an int: 0 on success, -1 with a message on stderr.
 */
#ifndef BENCH_H
#define BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/types.h>

#define BENCH_BODY_LEN    256 /* bytes of every message body (bin), as issue 6 fixes it */
#define BENCH_HIST_SUB    64  /* sub-buckets per power of two (>= 64: < 1.6 % error) */
#define BENCH_HIST_N      (58 * BENCH_HIST_SUB)
#define BENCH_SERIES_MAX  4096 /* throughput samples per workload */
#define BENCH_SERIES_STEP 0.25 /* seconds per throughput sample */
#define BENCH_EXTRA_MAX   16   /* workload-specific fields per result (the soak uses 10) */
#define BENCH_NAME_MAX    48

/* ---- clocks and histograms (bench_stats.c) ------------------------------------------------ */

/* bench_now_ns returns CLOCK_MONOTONIC in nanoseconds; the clock is shared by every process on the
 * machine, so a timestamp written by one process can be subtracted in another. Any thread. */
uint64_t bench_now_ns(void);

/* bench_sleep_until sleeps until bench_now_ns() >= t_ns (returns at once if it already is).
 * Blocks. */
void bench_sleep_until(uint64_t t_ns);

/* A latency histogram in nanoseconds. All fields are plain integers so that one can live in a
 * MAP_SHARED mapping; zero-initialised memory is an empty histogram. */
typedef struct bench_hist {
    uint64_t count;
    uint64_t sum_ns;
    uint64_t max_ns;
    uint64_t buckets[BENCH_HIST_N];
} bench_hist;

/* bench_hist_record adds one sample. Any thread or process, concurrently; does not block. */
void bench_hist_record(bench_hist *h, uint64_t ns);

/* bench_hist_snapshot copies src into dst (dst is the caller's, src keeps being updated). */
void bench_hist_snapshot(bench_hist *dst, const bench_hist *src);

/* bench_hist_sub subtracts an earlier snapshot: h -= earlier (max_ns is kept as is). */
void bench_hist_sub(bench_hist *h, const bench_hist *earlier);

/* bench_hist_merge adds src into dst; the caller owns dst exclusively. */
void bench_hist_merge(bench_hist *dst, const bench_hist *src);

/* bench_hist_pct returns the value (ns, bucket midpoint) at percentile p in [0, 100]; 0 when the
 * histogram is empty. bench_hist_mean the mean in ns. */
double bench_hist_pct(const bench_hist *h, double p);
double bench_hist_mean(const bench_hist *h);

/*
 * The page a sink process shares with the bench (a file in the bench's temporary directory, mapped
 * MAP_SHARED by both). received[] counts messages per priority lane; lat[] is the latency from the
 * timestamp the sender put in the first 8 bytes of the body to the moment the sink got it. The
 * 9th byte of a critical message's payload may tag its phase (bench_w_priority): 'I' idle (recorded
 * in lat_idle instead), 'X' a transition (not recorded), anything else as usual.
 */
typedef struct bench_shm {
    uint64_t ready;
    uint64_t received[4];
    uint64_t errors;
    bench_hist lat[4];
    bench_hist lat_idle; /* critical messages tagged 'I' (sent while the bus was idle) */
} bench_shm;

/* bench_shm_map creates (create=true, truncated and zeroed) or opens the file at path and maps it.
 * The mapping belongs to the caller (bench_shm_unmap). Blocks on file I/O. */
bench_shm *bench_shm_map(const char *path, bool create);
void bench_shm_unmap(bench_shm *shm);

/* Relaxed atomic helpers for counters shared between threads or processes. */
static inline void bench_add(uint64_t *p, uint64_t v)
{
    __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
static inline uint64_t bench_load(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* ---- results ------------------------------------------------------------------------------ */

typedef struct bench_kv {
    char key[32];
    double value;
} bench_kv;

/* The outcome of one workload or scenario. lat may be empty (count 0): throughput-only loads. */
typedef struct bench_result {
    char name[BENCH_NAME_MAX];
    char what[160]; /* one-line description */
    char unit[16];  /* "rt/s" (round trips) or "msg/s" */
    bool available; /* false: the daemon could not run it (see note) */
    bool gated;     /* the ratio is compared with the baseline */
    char note[160];
    double secs;     /* measured wall-clock time */
    double offered;  /* offered rate for open-loop loads, else 0 */
    uint64_t total;  /* attempts */
    uint64_t ok;     /* succeeded */
    uint64_t failed; /* errors and timeouts */
    double rate;     /* ok / secs */
    double ratio;    /* rate / the reference's rate in the same trial */
    int trial;       /* the trial this result comes from (median ratio) */
    bench_hist lat;
    bench_kv extra[BENCH_EXTRA_MAX];
    size_t n_extra;
    uint32_t series[BENCH_SERIES_MAX]; /* completions per BENCH_SERIES_STEP */
    size_t n_series;
} bench_result;

/* bench_result_extra appends (key, value) to r->extra; when full it says so on stderr and drops the
 * field, so a workload that outgrows BENCH_EXTRA_MAX shows up in the first run. Any thread that
 * owns r. */
void bench_result_extra(bench_result *r, const char *key, double value);

/* ---- live progress (bench_out.c) ---------------------------------------------------------- */

/* The workload now running; its counters are updated by the workload threads. */
typedef struct bench_live {
    char name[BENCH_NAME_MAX];
    uint64_t t0_ns, dur_ns;
    uint64_t ok, failed;
    bench_hist *lat; /* may be NULL */
} bench_live;

extern bench_live bench_live_now;

/* bench_progress_start/stop run the progress thread: a \r-updated line on stderr when it is a tty,
 * else one line every 5 s. bench_live_begin announces a workload (main thread only). */
int bench_progress_start(void);
void bench_progress_stop(void);
void bench_live_begin(const char *name, double secs, bench_hist *lat);

/* ---- output and gate (bench_out.c) -------------------------------------------------------- */

typedef struct bench_report {
    const char *url;
    double ref_rate; /* the median reference rate of the trials */
    int trials;
    bool short_form;
    double duration; /* seconds per workload */
    double load1_before, load1_after;
    bench_result **res;
    size_t n_res;
} bench_report;

void bench_print_table(const bench_report *rep, FILE *out);
int bench_write_json(const bench_report *rep, const char *path);
int bench_write_plot(const bench_report *rep, const char *path, const char *tmpdir);

/* bench_compare reads the baseline at path and checks every gated ratio and scenario error rate
 * against it. Returns 0 when all pass, 1 on a regression (each printed on stderr), 2 when the
 * baseline cannot be read. */
int bench_compare(const bench_report *rep, const char *path);

/* bench_selftest checks the histogram and the gate on synthetic data, writing a scratch file in
 * tmpdir (bench_selftest.c). Returns the process exit code. */
int bench_selftest(const char *tmpdir);

/* ---- reference (bench_ref.c) -------------------------------------------------------------- */

/* bench_ref_server runs a REP echo server on url with n contexts until SIGTERM/SIGINT (the
 * `--role nng-echo` process). Blocks. Returns the process exit code. */
int bench_ref_server(const char *url, int contexts);

/* bench_ref_client measures round trips/s against an echo server on url with inflight contexts,
 * BENCH_BODY_LEN-byte bodies, for secs seconds (after a short warm-up). Blocks. */
int bench_ref_client(const char *url, int inflight, double secs, bench_result *r);

/* ---- workloads (bench_work.c) ------------------------------------------------------------- */

typedef struct bench_env {
    const char *url;    /* the daemon's agent socket */
    const char *self;   /* path of this executable, for the agent roles */
    const char *tmpdir; /* private temporary directory */
    pid_t daemon_pid;   /* 0 when attached with --url (no RSS) */
    double secs;        /* duration of a throughput workload */
    bool short_form;
    unsigned seq;  /* makes agent names unique across trials */
    int producers; /* producer threads of oneway and durable (each its own client) */
} bench_env;

/* Each runs one workload against the daemon and fills *r. They spawn and stop their own agent
 * processes. Block for the workload's duration. Return 0, or -1 when the workload could not be
 * set up at all (r->available is false with the reason in r->note). */
/* How a closed request/reply loop keeps its requests in flight. */
typedef enum work_style {
    WORK_ASYNC,   /* hsbus_request_async chains to the external echo agent (like the reference) */
    WORK_THREADS, /* a thread per request in flight, blocking in hsbus_request */
    WORK_BUILTIN, /* hsbus_request_async chains to the built-in echo agent thread */
} work_style;
int bench_w_reqrep_closed(bench_env *e, int inflight, work_style style, bench_result *r);
int bench_w_reqrep_open(bench_env *e, double rate, bench_result *r);
int bench_w_oneway(bench_env *e, bool batched, bench_result *r);
int bench_w_durable(bench_env *e, bench_result *r);
int bench_w_priority(bench_env *e, bench_result *r);
int bench_w_scenario(bench_env *e, const char *name, bench_result *r);

/* Agent roles run in their own processes (exec'd `hsbus-bench --role ...`). Block until SIGTERM. */
int bench_role_echo_agent(const char *url, const char *name, int threads, const char *stat_path);
int bench_role_sink(const char *url, const char *name, int threads, const char *stat_path);

/* ---- processes (hsbus_bench.c) ------------------------------------------------------------ */

/* bench_spawn runs argv (argv[0] a path) as a child process with stdout/stderr appended to
 * logpath (NULL: inherited). Returns its pid or -1. bench_stop sends SIGTERM, waits up to 5 s,
 * then SIGKILLs; it returns the exit status. */
pid_t bench_spawn(char *const argv[], const char *logpath);
int bench_stop(pid_t pid);

/* bench_rss_kb reads VmRSS of pid from /proc; 0 when unknown. */
uint64_t bench_rss_kb(pid_t pid);

extern volatile int bench_interrupted; /* set by SIGINT in the main process */

#endif /* BENCH_H */
