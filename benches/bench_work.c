/*
 * benches/bench_work.c - the workloads, the seed scenarios and the agent roles.
 *
 * Processes. The bench process drives the load (requesters and producers are its threads, each
 * with its own libhsbus client); every agent on the receiving side (the echo agent for request/
 * reply, the sink for one-way, durable and priority) is a separate process, `hsbus-bench --role
 * ...`, exec'd, with its own libhsbus client. A role shares one bench_shm page with the bench (a
 * file in the temporary directory): it sets `ready` once it is connected and, for a sink, counts
 * what it received per lane and the latency from the send timestamp carried in the body.
 *
 * Measuring. Each workload runs a warm-up (15 % of its duration, at least 0.3 s) that is not
 * recorded, then the measured window; rates are counted over real wall-clock time. Open-loop loads
 * follow a schedule fixed in advance and measure every request from its scheduled send time, so a
 * stall that delays later sends shows as latency instead of disappearing (coordinated omission).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hsbus.h>

#include "bench.h"

#define WORK_THREADS_MAX 256
#define WORK_CALL_MS     5000

/* ---- helpers ------------------------------------------------------------------------------ */

static uint64_t work_warmup_ns(double secs)
{
    double w = secs * 0.15;
    return (uint64_t)((w < 0.3 ? 0.3 : w) * 1e9);
}

/* work_body sets msg's body to BENCH_BODY_LEN bytes of bin and returns the offset of the first
 * payload byte inside the encoded body (where the send timestamp goes), or -1. */
static long work_body(hsbus_msg *msg)
{
    uint8_t payload[BENCH_BODY_LEN];

    memset(payload, 'x', sizeof(payload));
    if (hsbus_msg_set_body_bin(msg, payload, sizeof(payload)) != HSBUS_OK) {
        return -1;
    }
    return (long)(msg->body_len - sizeof(payload));
}

static void work_stamp(hsbus_msg *msg, long off)
{
    uint64_t now = bench_now_ns();
    memcpy(msg->body + off, &now, sizeof(now));
}

static void work_series_add(bench_result *r, uint64_t rec_from, uint64_t t)
{
    if (t < rec_from) {
        return;
    }
    size_t slot = (size_t)((double)(t - rec_from) / 1e9 / BENCH_SERIES_STEP);
    if (slot < BENCH_SERIES_MAX) {
        __atomic_fetch_add(&r->series[slot], 1, __ATOMIC_RELAXED);
    }
}

static void work_finish(bench_result *r, uint64_t rec_from, uint64_t end)
{
    r->secs = (double)(end - rec_from) / 1e9;
    r->total = r->ok + r->failed;
    r->rate = r->secs > 0 ? (double)r->ok / r->secs : 0;
    r->n_series = (size_t)(r->secs / BENCH_SERIES_STEP + 0.5);
    if (r->n_series > BENCH_SERIES_MAX) {
        r->n_series = BENCH_SERIES_MAX;
    }
    r->available = true;
}

/* A child role process with its shared page. */
typedef struct work_child {
    pid_t pid;
    bench_shm *shm;
    char name[BENCH_NAME_MAX];
} work_child;

static int work_child_start(bench_env *e, work_child *c, const char *role, const char *name,
                            int threads, bench_result *r)
{
    char stat[512], logp[512], th[16];

    snprintf(c->name, sizeof(c->name), "%s", name);
    snprintf(stat, sizeof(stat), "%s/%s.stat", e->tmpdir, name);
    snprintf(logp, sizeof(logp), "%s/%s.log", e->tmpdir, name);
    snprintf(th, sizeof(th), "%d", threads);
    c->shm = bench_shm_map(stat, true);
    if (c->shm == NULL) {
        snprintf(r->note, sizeof(r->note), "cannot map %.120s", stat);
        return -1;
    }
    char *argv[] = {(char *)e->self, "--role",    (char *)role, "--url",  (char *)e->url, "--name",
                    (char *)name,    "--threads", th,           "--stat", stat,           NULL};
    c->pid = bench_spawn(argv, logp);
    if (c->pid < 0) {
        snprintf(r->note, sizeof(r->note), "cannot start %s", role);
        goto fail;
    }
    for (int i = 0; i < 1000 && bench_load(&c->shm->ready) == 0; i++) {
        usleep(10000);
    }
    if (bench_load(&c->shm->ready) != 1) {
        snprintf(r->note, sizeof(r->note), "%s %s did not connect (see %.80s)", role, name, logp);
        goto fail;
    }
    return 0;
fail:
    if (c->pid > 0) {
        bench_stop(c->pid);
    }
    c->pid = 0;
    bench_shm_unmap(c->shm);
    c->shm = NULL;
    return -1;
}

static void work_child_stop(work_child *c)
{
    if (c->pid > 0) {
        bench_stop(c->pid);
    }
    c->pid = 0;
    bench_shm_unmap(c->shm);
    c->shm = NULL;
}

static int work_connect(bench_env *e, const char *name, unsigned contexts, hsbus_client **c,
                        bench_result *r)
{
    hsbus_opts o = {.agent = name, .contexts = contexts, .timeout_ms = WORK_CALL_MS};
    hsbus_err err = hsbus_connect(e->url, &o, c);

    if (err != HSBUS_OK) {
        snprintf(r->note, sizeof(r->note), "connect %s: %s %s", name, hsbus_err_name(err),
                 hsbus_errmsg(NULL));
        return -1;
    }
    return 0;
}

/* ---- request/reply, closed loop -------------------------------------------------------------- */

typedef struct work_cl {
    hsbus_client *c;
    const char *to;
    uint64_t rec_from, end;
    bench_result *r;
    hsbus_err first_err;
    char first_msg[128];
    pthread_mutex_t mu;
    pthread_cond_t cv; /* async: a chain ended */
    int active;        /* async: chains still running */
} work_cl;

static void work_note_err(pthread_mutex_t *mu, hsbus_err *first, char *msg, size_t cap,
                          hsbus_err err, const char *text)
{
    pthread_mutex_lock(mu);
    if (*first == HSBUS_OK) {
        *first = err;
        snprintf(msg, cap, "%.100s", text);
    }
    pthread_mutex_unlock(mu);
}

/* work_cl_record counts one round trip sent at t0 and finished at t1 (if inside the window). */
static void work_cl_record(work_cl *w, uint64_t t0, uint64_t t1, hsbus_err err)
{
    if (t0 < w->rec_from) {
        return;
    }
    if (err == HSBUS_OK) {
        bench_add(&w->r->ok, 1);
        bench_add(&bench_live_now.ok, 1);
        bench_hist_record(&w->r->lat, t1 - t0);
        work_series_add(w->r, w->rec_from, t1);
    } else {
        bench_add(&w->r->failed, 1);
        bench_add(&bench_live_now.failed, 1);
        work_note_err(&w->mu, &w->first_err, w->first_msg, sizeof(w->first_msg), err,
                      hsbus_errmsg(w->c));
    }
}

/* One requester thread: hsbus_request in a loop. */
static void *work_cl_thread(void *arg)
{
    work_cl *w = arg;
    hsbus_msg msg;

    hsbus_msg_init(&msg);
    snprintf(msg.to, sizeof(msg.to), "%s", w->to);
    if (work_body(&msg) < 0) {
        return NULL;
    }
    for (;;) {
        uint64_t t0 = bench_now_ns();
        if (t0 >= w->end || bench_interrupted) {
            break;
        }
        hsbus_msg *reply = NULL;
        hsbus_err err = hsbus_request(w->c, &msg, WORK_CALL_MS, &reply);
        hsbus_msg_free(&reply);
        work_cl_record(w, t0, bench_now_ns(), err);
    }
    hsbus_msg_clear(&msg);
    return NULL;
}

/* One chain of hsbus_request_async: each reply's callback sends the next request. */
typedef struct work_chain {
    work_cl *w;
    hsbus_msg msg;
    uint64_t t0;
} work_chain;

static void work_chain_end(work_cl *w)
{
    pthread_mutex_lock(&w->mu);
    w->active--;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void work_chain_cb(hsbus_client *c, hsbus_err err, hsbus_msg *reply, void *arg)
{
    work_chain *ch = arg;
    work_cl *w = ch->w;
    uint64_t t1 = bench_now_ns();

    hsbus_msg_free(&reply);
    work_cl_record(w, ch->t0, t1, err);
    if (t1 >= w->end || bench_interrupted) {
        work_chain_end(w);
        return;
    }
    ch->t0 = t1;
    err = hsbus_request_async(c, &ch->msg, WORK_CALL_MS, work_chain_cb, ch);
    if (err != HSBUS_OK) {
        work_cl_record(w, ch->t0, bench_now_ns(), err);
        work_chain_end(w);
    }
}

/* work_run_chains keeps n requests in flight with hsbus_request_async until w->end; returns the
 * chains that could not start. */
static int work_run_chains(work_cl *w, int n)
{
    work_chain *chs = calloc((size_t)n, sizeof(*chs));
    int failed = 0;

    if (chs == NULL) {
        return n;
    }
    for (int i = 0; i < n; i++) {
        chs[i].w = w;
        hsbus_msg_init(&chs[i].msg);
        snprintf(chs[i].msg.to, sizeof(chs[i].msg.to), "%s", w->to);
        if (work_body(&chs[i].msg) < 0) {
            failed++;
            continue;
        }
        pthread_mutex_lock(&w->mu);
        w->active++;
        pthread_mutex_unlock(&w->mu);
        chs[i].t0 = bench_now_ns();
        hsbus_err err =
            hsbus_request_async(w->c, &chs[i].msg, WORK_CALL_MS, work_chain_cb, &chs[i]);
        if (err != HSBUS_OK) {
            work_cl_record(w, chs[i].t0, bench_now_ns(), err);
            work_chain_end(w);
            failed++;
        }
    }
    pthread_mutex_lock(&w->mu);
    while (w->active > 0) {
        pthread_cond_wait(&w->cv, &w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < n; i++) {
        hsbus_msg_clear(&chs[i].msg);
    }
    free(chs);
    return failed;
}

int bench_w_reqrep_closed(bench_env *e, int inflight, work_style style, bench_result *r)
{
    work_child agent = {0};
    work_cl w = {.r = r, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    char name[64], rname[64];
    pthread_t th[WORK_THREADS_MAX];
    bool builtin = style == WORK_BUILTIN;
    bool threads = style == WORK_THREADS;
    int rc = -1;

    inflight = inflight > WORK_THREADS_MAX ? WORK_THREADS_MAX : inflight;
    snprintf(r->name, sizeof(r->name), "%s-c%d%s", builtin ? "builtin" : "reqrep", inflight,
             threads ? "-threads" : "");
    snprintf(r->what, sizeof(r->what), "%s, closed loop, %d in flight (%s)",
             builtin ? "request/reply to the built-in echo agent thread"
                     : "request -> broker -> external echo agent -> reply",
             inflight, threads ? "a thread each, hsbus_request" : "hsbus_request_async chains");
    snprintf(r->unit, sizeof(r->unit), "rt/s");
    unsigned seq = e->seq++;
    if (builtin) {
        snprintf(name, sizeof(name), "echo");
    } else {
        snprintf(name, sizeof(name), "bench-echo-%u", seq);
        if (work_child_start(e, &agent, "echo-agent", name, 2, r) != 0) {
            return -1;
        }
    }
    snprintf(rname, sizeof(rname), "bench-req-%u", seq);
    if (work_connect(e, rname, (unsigned)inflight + 4, &w.c, r) != 0) {
        goto out;
    }
    w.to = name;
    bench_live_begin(r->name, e->secs, &r->lat);
    uint64_t t0 = bench_now_ns();
    w.rec_from = t0 + work_warmup_ns(e->secs);
    w.end = w.rec_from + (uint64_t)(e->secs * 1e9);
    if (threads) {
        int started = 0;
        for (; started < inflight; started++) {
            if (pthread_create(&th[started], NULL, work_cl_thread, &w) != 0) {
                break;
            }
        }
        for (int i = 0; i < started; i++) {
            pthread_join(th[i], NULL);
        }
    } else {
        (void)work_run_chains(&w, inflight);
    }
    work_finish(r, w.rec_from, w.end);
    if (w.first_err != HSBUS_OK) {
        snprintf(r->note, sizeof(r->note), "first error: %s %s", hsbus_err_name(w.first_err),
                 w.first_msg);
    }
    rc = 0;
out:
    hsbus_close(&w.c);
    work_child_stop(&agent);
    return rc;
}

/* ---- request/reply, open loop (also the seed scenarios) ---------------------------------------
 */

typedef struct work_ol {
    pthread_mutex_t mu;
    uint64_t next, t0, end, rec_from;
    double rate;                   /* requests per second outside the spike */
    uint64_t spike_from, spike_to; /* absolute ns; rate x spike_mul in between */
    double spike_mul;
    hsbus_client **clients;
    size_t n_clients;
    unsigned worker_seq;
    const char *to;
    bench_result *r;
    uint64_t late;        /* requests that started more than 1 ms after their schedule */
    uint64_t unsent;      /* requests still unsent 1 s after the window (system overloaded) */
    bench_hist spike_lat; /* latency of requests scheduled inside the spike */
    hsbus_err first_err;
    char first_msg[128];
} work_ol;

/* work_ol_step returns the scheduled time of the request after the one due at t. */
static uint64_t work_ol_step(const work_ol *o, uint64_t t)
{
    double rate = o->rate;
    if (t >= o->spike_from && t < o->spike_to) {
        rate *= o->spike_mul;
    }
    return t + (uint64_t)(1e9 / rate);
}

/*
 * work_ol_next hands out the next scheduled request. Requests are handed out in schedule order
 * however late they are (their lateness is counted as latency); but once the measured window has
 * ended and a grace second has passed, the remaining ones are not sent: they are counted as
 * unsent (and failed) instead of stretching the run while a backlog drains.
 */
static bool work_ol_next(work_ol *o, uint64_t *t)
{
    bool ok;

    pthread_mutex_lock(&o->mu);
    *t = o->next;
    ok = *t < o->end && !bench_interrupted;
    if (ok && bench_now_ns() > o->end + 1000000000u) {
        for (uint64_t u = o->next; u < o->end; u = work_ol_step(o, u)) {
            o->unsent++;
        }
        o->next = o->end;
        ok = false;
    }
    if (ok) {
        o->next = work_ol_step(o, o->next);
    }
    pthread_mutex_unlock(&o->mu);
    return ok;
}

static void *work_ol_thread(void *arg)
{
    work_ol *o = arg;
    hsbus_msg msg;
    uint64_t ts;

    pthread_mutex_lock(&o->mu);
    hsbus_client *c = o->clients[o->worker_seq++ % o->n_clients];
    pthread_mutex_unlock(&o->mu);
    hsbus_msg_init(&msg);
    snprintf(msg.to, sizeof(msg.to), "%s", o->to);
    if (work_body(&msg) < 0) {
        return NULL;
    }
    while (work_ol_next(o, &ts)) {
        bench_sleep_until(ts);
        uint64_t t0 = bench_now_ns();
        hsbus_msg *reply = NULL;
        hsbus_err err = hsbus_request(c, &msg, WORK_CALL_MS, &reply);
        uint64_t t1 = bench_now_ns();
        hsbus_msg_free(&reply);
        if (ts < o->rec_from) {
            continue;
        }
        if (t0 > ts + 1000000) {
            bench_add(&o->late, 1);
        }
        if (err == HSBUS_OK) {
            bench_add(&o->r->ok, 1);
            bench_add(&bench_live_now.ok, 1);
            bench_hist_record(&o->r->lat, t1 - ts); /* from the scheduled time */
            if (ts >= o->spike_from && ts < o->spike_to) {
                bench_hist_record(&o->spike_lat, t1 - ts);
            }
            work_series_add(o->r, o->rec_from, t1);
        } else {
            bench_add(&o->r->failed, 1);
            bench_add(&bench_live_now.failed, 1);
            work_note_err(&o->mu, &o->first_err, o->first_msg, sizeof(o->first_msg), err,
                          hsbus_errmsg(c));
        }
    }
    hsbus_msg_clear(&msg);
    return NULL;
}

typedef struct work_ol_cfg {
    double rate, secs, warm;
    unsigned workers;
    double spike_mul; /* 0: none; else the middle third runs at rate x spike_mul */
    bool watch_rss;
} work_ol_cfg;

static int work_open_loop(bench_env *e, const work_ol_cfg *cfg, bench_result *r)
{
    work_child agent = {0};
    work_ol *o = calloc(1, sizeof(*o));
    pthread_t th[WORK_THREADS_MAX];
    char name[64];
    int started = 0, rc = -1;
    unsigned workers = cfg->workers > WORK_THREADS_MAX ? WORK_THREADS_MAX : cfg->workers;

    if (o == NULL) {
        return -1;
    }
    pthread_mutex_init(&o->mu, NULL);
    unsigned seq = e->seq++;
    snprintf(name, sizeof(name), "bench-echo-%u", seq);
    if (work_child_start(e, &agent, "echo-agent", name, 2, r) != 0) {
        goto out;
    }
    o->n_clients = (workers + 49) / 50;
    o->clients = calloc(o->n_clients, sizeof(*o->clients));
    if (o->clients == NULL) {
        goto out;
    }
    for (size_t i = 0; i < o->n_clients; i++) {
        char cname[64];
        snprintf(cname, sizeof(cname), "bench-users-%u-%zu", seq, i);
        if (work_connect(e, cname, (unsigned)(workers / o->n_clients) + 4, &o->clients[i], r) !=
            0) {
            goto out;
        }
    }
    o->to = name;
    o->r = r;
    o->rate = cfg->rate;
    o->spike_mul = cfg->spike_mul > 0 ? cfg->spike_mul : 1.0;
    bench_live_begin(r->name, cfg->secs, &r->lat);
    o->t0 = bench_now_ns() + 20000000;
    o->next = o->t0;
    o->rec_from = o->t0 + (uint64_t)(cfg->warm * 1e9);
    o->end = o->rec_from + (uint64_t)(cfg->secs * 1e9);
    o->spike_from = o->spike_to = o->end;
    if (cfg->spike_mul > 0) {
        o->spike_from = o->rec_from + (uint64_t)(cfg->secs / 3 * 1e9);
        o->spike_to = o->rec_from + (uint64_t)(cfg->secs * 2 / 3 * 1e9);
    }
    for (; started < (int)workers; started++) {
        if (pthread_create(&th[started], NULL, work_ol_thread, o) != 0) {
            break;
        }
    }
    /* The main thread samples the daemon's RSS once a second while the load runs. Memory that only
     * warms up (tables and queues reaching the size the load needs, the allocator's high-water
     * mark) levels off; a leak keeps rising. The second half of the run tells the two apart
     * (docs/benchmarks.md). */
    uint64_t rss_first = 0, rss_last = 0, rss_max = 0, rss_after_warm = 0, rss_half = 0;
    if (cfg->watch_rss && e->daemon_pid > 0) {
        uint64_t warm_until = o->rec_from + (uint64_t)(cfg->secs * 0.2 * 1e9);
        uint64_t half = o->rec_from + (uint64_t)(cfg->secs * 0.5 * 1e9);
        for (uint64_t t = bench_now_ns(); t < o->end && !bench_interrupted; t += 1000000000u) {
            bench_sleep_until(t);
            uint64_t kb = bench_rss_kb(e->daemon_pid);
            rss_first = rss_first == 0 ? kb : rss_first;
            if (t >= warm_until && rss_after_warm == 0) {
                rss_after_warm = kb;
            }
            if (t >= half && rss_half == 0) {
                rss_half = kb;
            }
            rss_last = kb;
            rss_max = kb > rss_max ? kb : rss_max;
        }
    }
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
    }
    work_finish(r, o->rec_from, o->end);
    r->offered = cfg->rate;
    r->failed += o->unsent;
    r->total += o->unsent;
    bench_result_extra(r, "late_starts", (double)o->late);
    bench_result_extra(r, "unsent", (double)o->unsent);
    if (cfg->spike_mul > 0) {
        bench_result_extra(r, "spike_rate", cfg->rate * cfg->spike_mul);
        bench_result_extra(r, "spike_p99_ms", bench_hist_pct(&o->spike_lat, 99) / 1e6);
    }
    if (cfg->watch_rss && rss_last > 0) {
        uint64_t base = rss_after_warm > 0 ? rss_after_warm : rss_first;
        uint64_t rss_end = bench_rss_kb(e->daemon_pid);
        rss_end = rss_end > 0 ? rss_end : rss_last;
        bench_result_extra(r, "rss_start_kb", (double)rss_first);
        bench_result_extra(r, "rss_base_kb", (double)base);
        bench_result_extra(r, "rss_end_kb", (double)rss_end);
        bench_result_extra(r, "rss_max_kb", (double)rss_max);
        bench_result_extra(r, "rss_growth_pct",
                           base > 0 ? ((double)rss_end - (double)base) * 100.0 / (double)base : 0);
        if (rss_half > 0) {
            bench_result_extra(r, "rss_half_kb", (double)rss_half);
            bench_result_extra(r, "rss_tail_growth_pct",
                               ((double)rss_end - (double)rss_half) * 100.0 / (double)rss_half);
        }
    }
    if (o->first_err != HSBUS_OK) {
        snprintf(r->note, sizeof(r->note), "first error: %s %s", hsbus_err_name(o->first_err),
                 o->first_msg);
    }
    rc = 0;
out:
    if (o->clients != NULL) {
        for (size_t i = 0; i < o->n_clients; i++) {
            hsbus_close(&o->clients[i]);
        }
        free(o->clients);
    }
    work_child_stop(&agent);
    pthread_mutex_destroy(&o->mu);
    free(o);
    return rc;
}

int bench_w_reqrep_open(bench_env *e, double rate, bench_result *r)
{
    work_ol_cfg cfg = {.rate = rate,
                       .secs = e->secs,
                       .warm = (double)work_warmup_ns(e->secs) / 1e9,
                       .workers = 64};

    snprintf(r->name, sizeof(r->name), "reqrep-open-%.0fk", rate / 1000);
    snprintf(r->what, sizeof(r->what),
             "request/reply, open loop at %.0f/s, latency from the scheduled send time", rate);
    snprintf(r->unit, sizeof(r->unit), "rt/s");
    return work_open_loop(e, &cfg, r);
}

/* The seed scenarios: users x requests/s for a duration, request/reply to an external echo agent,
 * everything recorded from the first request (no warm-up: users see it too). */
typedef struct work_scn {
    const char *name;
    unsigned users;
    double per_user;
    double secs, short_secs;
    double spike_mul;
    bool soak;
    const char *what;
} work_scn;

static const work_scn work_scenarios[] = {
    {"light", 10, 2, 30, 4, 0, false, "10 users x 2 req/s"},
    {"moderate", 50, 5, 60, 4, 0, false, "50 users x 5 req/s"},
    {"heavy", 100, 10, 120, 5, 0, false, "100 users x 10 req/s"},
    {"stress", 200, 20, 180, 5, 0, false, "200 users x 20 req/s"},
    {"spike", 50, 5, 60, 6, 10, false, "50 users x 5 req/s, 10x step in the middle third"},
    {"soak", 50, 5, 600, 12, 0, true, "50 users x 5 req/s, long, daemon RSS watched"},
};

int bench_w_scenario(bench_env *e, const char *name, bench_result *r)
{
    const work_scn *s = NULL;

    for (size_t i = 0; i < sizeof(work_scenarios) / sizeof(work_scenarios[0]); i++) {
        if (strcmp(work_scenarios[i].name, name) == 0) {
            s = &work_scenarios[i];
        }
    }
    if (s == NULL) {
        fprintf(stderr, "hsbus-bench: no scenario %s\n", name);
        return -1;
    }
    work_ol_cfg cfg = {.rate = s->users * s->per_user,
                       .secs = e->short_form ? s->short_secs : s->secs,
                       .warm = 0.0,
                       .workers = s->users,
                       .spike_mul = s->spike_mul,
                       .watch_rss = s->soak};
    snprintf(r->name, sizeof(r->name), "%s", s->name);
    snprintf(r->what, sizeof(r->what), "scenario %s: %s, %.0f s, request/reply", s->name, s->what,
             cfg.secs);
    snprintf(r->unit, sizeof(r->unit), "rt/s");
    return work_open_loop(e, &cfg, r);
}

/* ---- one-way, durable and priority: producers -> broker -> sink -------------------------------
 */

typedef struct work_prod {
    bench_env *e;
    const char *to;
    const char *batch_key; /* NULL: none */
    size_t batch;          /* envelopes per send request */
    uint8_t prio;
    bool durable;
    uint64_t end;
    uint64_t period_ns; /* 0: as fast as possible; else one request per period */
    const int *gate;    /* NULL, or send only while *gate != 0 (priority: load on/off) */
    const int *tag;     /* NULL, or a phase byte written after the timestamp in each body */
    uint64_t sent, busy, failed;
    hsbus_err first_err;
    char first_msg[128];
    pthread_mutex_t mu;
    unsigned seq;
} work_prod;

static void *work_prod_thread(void *arg)
{
    work_prod *p = arg;
    hsbus_client *c = NULL;
    hsbus_msg *msgs = calloc(p->batch, sizeof(*msgs));
    hsbus_result *res = calloc(p->batch, sizeof(*res));
    long off = -1;
    char name[64];
    bench_result dummy = {0};

    pthread_mutex_lock(&p->mu);
    snprintf(name, sizeof(name), "bench-prod-%u-%u", p->e->seq, p->seq++);
    pthread_mutex_unlock(&p->mu);
    if (msgs == NULL || res == NULL || work_connect(p->e, name, 4, &c, &dummy) != 0) {
        work_note_err(&p->mu, &p->first_err, p->first_msg, sizeof(p->first_msg), HSBUS_EIO,
                      dummy.note);
        goto out;
    }
    for (size_t i = 0; i < p->batch; i++) {
        hsbus_msg_init(&msgs[i]);
        snprintf(msgs[i].to, sizeof(msgs[i].to), "%s", p->to);
        if (p->batch_key != NULL) {
            snprintf(msgs[i].batch, sizeof(msgs[i].batch), "%s", p->batch_key);
        }
        msgs[i].prio = p->prio;
        msgs[i].durable = p->durable;
        off = work_body(&msgs[i]);
        if (off < 0) {
            goto out;
        }
    }
    uint64_t next = bench_now_ns();
    while (!bench_interrupted) {
        if (p->period_ns > 0) {
            bench_sleep_until(next);
            next += p->period_ns;
        }
        if (bench_now_ns() >= p->end) {
            break;
        }
        if (p->gate != NULL && __atomic_load_n(p->gate, __ATOMIC_RELAXED) == 0) {
            usleep(1000);
            continue;
        }
        for (size_t i = 0; i < p->batch; i++) {
            work_stamp(&msgs[i], off);
            if (p->tag != NULL) {
                msgs[i].body[off + 8] = (uint8_t)__atomic_load_n(p->tag, __ATOMIC_RELAXED);
            }
        }
        hsbus_err err = p->batch == 1 ? hsbus_send(c, &msgs[0], &res[0].id)
                                      : hsbus_send_batch(c, msgs, p->batch, res);
        if (p->batch == 1) {
            res[0].err = err;
            snprintf(res[0].msg, sizeof(res[0].msg), "%s", err ? hsbus_errmsg(c) : "");
            err = HSBUS_OK;
        }
        if (err != HSBUS_OK) {
            bench_add(&p->failed, p->batch);
            work_note_err(&p->mu, &p->first_err, p->first_msg, sizeof(p->first_msg), err,
                          hsbus_errmsg(c));
            if (err == HSBUS_ECLOSED || err == HSBUS_EIO) {
                break;
            }
            continue;
        }
        size_t busy = 0;
        for (size_t i = 0; i < p->batch; i++) {
            if (res[i].err == HSBUS_OK) {
                bench_add(&p->sent, 1);
            } else if (res[i].err == HSBUS_EBUSY) {
                busy++;
            } else {
                bench_add(&p->failed, 1);
                work_note_err(&p->mu, &p->first_err, p->first_msg, sizeof(p->first_msg), res[i].err,
                              res[i].msg);
            }
        }
        if (busy > 0) {
            bench_add(&p->busy, busy);
            usleep(500); /* backpressure: the sink's queue is full */
        }
    }
out:
    if (msgs != NULL) {
        for (size_t i = 0; i < p->batch; i++) {
            hsbus_msg_clear(&msgs[i]);
        }
    }
    free(msgs);
    free(res);
    hsbus_close(&c);
    return NULL;
}

typedef struct work_prods {
    work_prod p;
    pthread_t th[16];
    int n;
} work_prods;

static void work_prods_start(work_prods *ps, int n)
{
    pthread_mutex_init(&ps->p.mu, NULL);
    for (ps->n = 0; ps->n < n && ps->n < 16; ps->n++) {
        if (pthread_create(&ps->th[ps->n], NULL, work_prod_thread, &ps->p) != 0) {
            break;
        }
    }
}

static void work_prods_join(work_prods *ps)
{
    for (int i = 0; i < ps->n; i++) {
        pthread_join(ps->th[i], NULL);
    }
    ps->n = 0;
    pthread_mutex_destroy(&ps->p.mu);
}

static uint64_t work_received(const bench_shm *shm)
{
    uint64_t n = 0;
    for (int i = 0; i < 4; i++) {
        n += bench_load(&shm->received[i]);
    }
    return n;
}

/* work_sample counts what the sink receives between rec_from and end into r (ok, series). */
static void work_sample(const bench_shm *shm, int lane, uint64_t rec_from, uint64_t end,
                        bench_result *r)
{
    bench_sleep_until(rec_from);
    uint64_t base = lane < 0 ? work_received(shm) : bench_load(&shm->received[lane]);
    uint64_t last = base;
    for (size_t slot = 1; !bench_interrupted; slot++) {
        uint64_t t = rec_from + (uint64_t)((double)slot * BENCH_SERIES_STEP * 1e9);
        t = t > end ? end : t;
        bench_sleep_until(t);
        uint64_t now = lane < 0 ? work_received(shm) : bench_load(&shm->received[lane]);
        if (slot - 1 < BENCH_SERIES_MAX) {
            r->series[slot - 1] = (uint32_t)(now - last);
        }
        bench_add(&bench_live_now.ok, now - last);
        last = now;
        if (t >= end) {
            break;
        }
    }
    r->ok = last - base;
}

static int work_flow(bench_env *e, bench_result *r, const char *batch_key, size_t batch,
                     bool durable, int producers)
{
    work_child sink = {0};
    work_prods ps = {0};
    char name[64];

    unsigned seq = e->seq++;
    snprintf(name, sizeof(name), "bench-sink-%u", seq);
    if (work_child_start(e, &sink, "sink", name, 2, r) != 0) {
        return -1;
    }
    bench_live_begin(r->name, e->secs, NULL);
    uint64_t t0 = bench_now_ns();
    uint64_t rec_from = t0 + work_warmup_ns(e->secs);
    uint64_t end = rec_from + (uint64_t)(e->secs * 1e9);
    bench_result_extra(r, "producers", producers);
    ps.p = (work_prod){.e = e,
                       .to = name,
                       .batch_key = batch_key,
                       .batch = batch,
                       .prio = HSBUS_PRIO_NORMAL,
                       .durable = durable,
                       .end = end};
    work_prods_start(&ps, producers);
    work_sample(sink.shm, -1, rec_from, end, r);
    work_prods_join(&ps);
    work_finish(r, rec_from, end);
    r->failed = ps.p.failed;
    r->total = r->ok + r->failed; /* delivered in the window + refused sends */
    bench_result_extra(r, "sent", (double)ps.p.sent);
    bench_result_extra(r, "busy", (double)ps.p.busy);
    bench_result_extra(r, "sink_errors", (double)bench_load(&sink.shm->errors));
    if (ps.p.first_err != HSBUS_OK) {
        snprintf(r->note, sizeof(r->note), "first error: %s %s", hsbus_err_name(ps.p.first_err),
                 ps.p.first_msg);
        if (durable && ps.p.sent == 0) {
            r->available = false; /* the daemon refused durable sends: no store */
        }
    }
    work_child_stop(&sink);
    return 0;
}

int bench_w_oneway(bench_env *e, bool batched, bench_result *r)
{
    snprintf(r->unit, sizeof(r->unit), "msg/s");
    if (batched) {
        snprintf(r->name, sizeof(r->name), "oneway-batch");
        snprintf(r->what, sizeof(r->what),
                 "one-way, producers x 64 envelopes per send, batch key, delivered msg/s");
        return work_flow(e, r, "bench", 64, false, e->producers);
    }
    snprintf(r->name, sizeof(r->name), "oneway");
    snprintf(r->what, sizeof(r->what),
             "one-way, producers x 64 envelopes per send, no batch key, delivered msg/s");
    return work_flow(e, r, NULL, 64, false, e->producers);
}

int bench_w_durable(bench_env *e, bench_result *r)
{
    snprintf(r->name, sizeof(r->name), "durable");
    snprintf(r->what, sizeof(r->what),
             "durable sends (answered after commit), producers x 64, consumer acks; msg/s");
    snprintf(r->unit, sizeof(r->unit), "msg/s");
    return work_flow(e, r, NULL, 64, true, e->producers);
}

/*
 * priority: one producer sends a critical message every 5 ms for the whole run while two others
 * saturate the sink's low lane in alternating 1 s segments: load on, load off. The critical
 * messages are tagged with the phase they were sent in ('L' loaded, 'I' idle; 'X' for the first
 * 250 ms after a switch, while the previous phase's backlog may still drain, not recorded), so
 * "idle" and "loaded" p99 are measured interleaved, under the same background noise. The rate is
 * the low lane's delivery rate while the load is on.
 */
int bench_w_priority(bench_env *e, bench_result *r)
{
    work_child sink = {0};
    work_prods low = {0}, crit = {0};
    char name[64];
    static int gate, tag;

    snprintf(r->name, sizeof(r->name), "priority");
    snprintf(r->what, sizeof(r->what),
             "low lane saturated (2 producers x 64) 1 s on / 1 s off + 200/s critical; "
             "low msg/s while on");
    snprintf(r->unit, sizeof(r->unit), "msg/s");
    unsigned seq = e->seq++;
    snprintf(name, sizeof(name), "bench-prio-%u", seq);
    if (work_child_start(e, &sink, "sink", name, 2, r) != 0) {
        return -1;
    }
    __atomic_store_n(&gate, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&tag, 'X', __ATOMIC_RELAXED);
    double secs = 2 * e->secs; /* half of it loaded, half idle */
    bench_live_begin(r->name, secs, NULL);
    uint64_t t0 = bench_now_ns();
    uint64_t rec_from = t0 + work_warmup_ns(e->secs);
    uint64_t end = rec_from + (uint64_t)(secs * 1e9);
    low.p = (work_prod){
        .e = e, .to = name, .batch = 64, .prio = HSBUS_PRIO_LOW, .end = end, .gate = &gate};
    crit.p = (work_prod){.e = e,
                         .to = name,
                         .batch = 1,
                         .prio = HSBUS_PRIO_CRITICAL,
                         .end = end,
                         .period_ns = 5000000,
                         .tag = &tag};
    work_prods_start(&low, 2);
    work_prods_start(&crit, 1);
    bench_sleep_until(rec_from);
    uint64_t last = bench_load(&sink.shm->received[HSBUS_PRIO_LOW]), on_count = 0;
    double on_secs = 0;
    for (size_t k = 0; !bench_interrupted; k++) {
        bool on = (k / 4) % 2 == 0; /* 4 steps of 0.25 s per segment */
        __atomic_store_n(&gate, on, __ATOMIC_RELAXED);
        __atomic_store_n(&tag, k % 4 == 0 ? 'X' : on ? 'L' : 'I', __ATOMIC_RELAXED);
        uint64_t t = rec_from + (uint64_t)((double)(k + 1) * BENCH_SERIES_STEP * 1e9);
        bench_sleep_until(t > end ? end : t);
        uint64_t now = bench_load(&sink.shm->received[HSBUS_PRIO_LOW]);
        if (k < BENCH_SERIES_MAX) {
            r->series[k] = (uint32_t)(now - last);
        }
        bench_add(&bench_live_now.ok, now - last);
        if (on) {
            on_count += now - last;
            on_secs += BENCH_SERIES_STEP;
        }
        last = now;
        if (t >= end) {
            break;
        }
    }
    work_prods_join(&low);
    work_prods_join(&crit);
    usleep(100000);
    bench_hist *idle = &sink.shm->lat_idle;
    bench_hist_snapshot(&r->lat, &sink.shm->lat[0]);
    work_finish(r, rec_from, end);
    r->ok = on_count;
    r->rate = on_secs > 0 ? (double)on_count / on_secs : 0;
    r->failed = low.p.failed + crit.p.failed;
    r->total = r->ok + r->failed;
    double p99_idle = bench_hist_pct(idle, 99) / 1e6, p99_load = bench_hist_pct(&r->lat, 99) / 1e6;
    bench_result_extra(r, "crit_p99_idle_ms", p99_idle);
    bench_result_extra(r, "crit_p99_load_ms", p99_load);
    bench_result_extra(r, "crit_p99_x_idle", p99_idle > 0 ? p99_load / p99_idle : 0);
    bench_result_extra(r, "crit_n_idle", (double)idle->count);
    bench_result_extra(r, "crit_n_load", (double)r->lat.count);
    bench_result_extra(r, "low_busy", (double)low.p.busy);
    if (low.p.first_err != HSBUS_OK || crit.p.first_err != HSBUS_OK) {
        bool l = low.p.first_err != HSBUS_OK;
        snprintf(r->note, sizeof(r->note), "first error: %s %s",
                 hsbus_err_name(l ? low.p.first_err : crit.p.first_err),
                 l ? low.p.first_msg : crit.p.first_msg);
    }
    work_child_stop(&sink);
    return 0;
}

/* ---- roles ------------------------------------------------------------------------------------
 */

static sigset_t work_role_signals(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* before any thread starts: they inherit it */
    return set;
}

#define WORK_ECHO_BATCH 64

typedef struct work_echo {
    hsbus_client *c;
    bench_shm *shm;
    volatile int stop;
} work_echo;

/*
 * work_echo_thread is the echo agent written for throughput: it fetches up to WORK_ECHO_BATCH
 * requests at once, answers all of them in one send (hsbus_send_batch) and acks them (the acks
 * ride on its next fetch), so a busy agent costs the broker two requests per batch, not two per
 * message. The bench runs two, so one fetch is parked while the other sends.
 */
static void *work_echo_thread(void *arg)
{
    work_echo *e = arg;
    hsbus_msg *in[WORK_ECHO_BATCH];
    hsbus_msg out[WORK_ECHO_BATCH];
    hsbus_result res[WORK_ECHO_BATCH];

    while (!e->stop) {
        size_t n = 0;
        hsbus_err err = hsbus_fetch(e->c, WORK_ECHO_BATCH, 200, in, &n);
        if (err != HSBUS_OK) {
            if (err == HSBUS_ECLOSED || err == HSBUS_EIO) {
                break;
            }
            bench_add(&e->shm->errors, 1);
            usleep(1000);
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            hsbus_msg_init(&out[i]);
            out[i].corr = in[i]->id;
            memcpy(out[i].to, in[i]->from, sizeof(out[i].to));
            out[i].prio = in[i]->prio;
            out[i].body = in[i]->body; /* only read by the send; freed with in[i] */
            out[i].body_len = in[i]->body_len;
        }
        if (n > 0 && hsbus_send_batch(e->c, out, n, res) != HSBUS_OK) {
            bench_add(&e->shm->errors, 1);
        }
        for (size_t i = 0; i < n; i++) {
            (void)hsbus_ack(e->c, in[i]->id);
            hsbus_msg_free(&in[i]);
        }
    }
    return NULL;
}

int bench_role_echo_agent(const char *url, const char *name, int threads, const char *stat_path)
{
    sigset_t set = work_role_signals();
    bench_shm *shm = bench_shm_map(stat_path, false);
    hsbus_opts o = {.agent = name, .contexts = (unsigned)threads * 2 + 4};
    hsbus_client *c = NULL;
    work_echo e = {0};
    pthread_t th[16];
    hsbus_err err;
    int sig, code = 1, started = 0;

    if (shm == NULL) {
        return 1;
    }
    if ((err = hsbus_connect(url, &o, &c)) != HSBUS_OK) {
        fprintf(stderr, "echo-agent: connect: %s %s\n", hsbus_err_name(err), hsbus_errmsg(NULL));
        goto out;
    }
    e.c = c;
    e.shm = shm;
    for (; started < threads && started < 16; started++) {
        if (pthread_create(&th[started], NULL, work_echo_thread, &e) != 0) {
            fprintf(stderr, "echo-agent: no thread\n");
            goto out;
        }
    }
    __atomic_store_n(&shm->ready, 1, __ATOMIC_RELEASE);
    sigwait(&set, &sig);
    code = 0;
out:
    e.stop = 1;
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
    }
    hsbus_close(&c);
    bench_shm_unmap(shm);
    return code;
}

typedef struct work_sink {
    hsbus_client *c;
    bench_shm *shm;
    volatile int stop;
} work_sink;

static void *work_sink_thread(void *arg)
{
    work_sink *s = arg;
    hsbus_msg *msgs[256];

    while (!s->stop) {
        size_t n = 0;
        hsbus_err err = hsbus_fetch(s->c, 256, 200, msgs, &n);
        uint64_t now = bench_now_ns();
        if (err != HSBUS_OK) {
            bench_add(&s->shm->errors, 1);
            if (err == HSBUS_ECLOSED || err == HSBUS_EIO) {
                break;
            }
            usleep(1000);
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            const uint8_t *data;
            size_t len;
            unsigned lane = msgs[i]->prio < 4 ? msgs[i]->prio : 3;
            if (hsbus_msg_body_bytes(msgs[i], &data, &len) == HSBUS_OK && len >= 8) {
                uint64_t ts;
                memcpy(&ts, data, sizeof(ts));
                /* A critical message may carry a phase tag (priority): 'I' idle, 'X' skip. */
                uint8_t tag = len >= 9 ? data[8] : 0;
                if (ts > 0 && ts <= now && lane == 0 && tag == 'I') {
                    bench_hist_record(&s->shm->lat_idle, now - ts);
                } else if (ts > 0 && ts <= now && !(lane == 0 && tag == 'X')) {
                    bench_hist_record(&s->shm->lat[lane], now - ts);
                }
            }
            bench_add(&s->shm->received[lane], 1);
            hsbus_ack(s->c, msgs[i]->id);
            hsbus_msg_free(&msgs[i]);
        }
    }
    return NULL;
}

int bench_role_sink(const char *url, const char *name, int threads, const char *stat_path)
{
    sigset_t set = work_role_signals();
    work_sink s = {.shm = bench_shm_map(stat_path, false)};
    hsbus_opts o = {.agent = name, .contexts = (unsigned)threads * 2 + 4};
    pthread_t th[16];
    int n = 0, sig, code = 1;
    hsbus_err err;

    if (s.shm == NULL) {
        return 1;
    }
    if ((err = hsbus_connect(url, &o, &s.c)) != HSBUS_OK) {
        fprintf(stderr, "sink: connect: %s %s\n", hsbus_err_name(err), hsbus_errmsg(NULL));
        goto out;
    }
    for (; n < threads && n < 16; n++) {
        if (pthread_create(&th[n], NULL, work_sink_thread, &s) != 0) {
            break;
        }
    }
    __atomic_store_n(&s.shm->ready, 1, __ATOMIC_RELEASE);
    sigwait(&set, &sig);
    s.stop = 1;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
    }
    code = 0;
out:
    hsbus_close(&s.c);
    bench_shm_unmap(s.shm);
    return code;
}
