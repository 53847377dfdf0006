/*
 * benches/bench_ref.c - the raw nng reference: REQ/REP echo over the same transport.
 *
 * The server (`hsbus-bench --role nng-echo`, a separate process like the daemon) is nng's own
 * context-based REP pattern: n contexts, each an aio state machine recv -> send -> recv. The client
 * keeps `inflight` REQ contexts busy from aio callbacks (nng's own pipelining pattern, as in its
 * perf tools and examples): each sends a BENCH_BODY_LEN-byte message and, on the echo, the next
 * one. It is the best raw nng can do on this transport, without the broker, the agent protocol or
 * msgpack. Every workload is reported as
 * a ratio to this number, measured in the same run, so results compare across noisy machines.
 */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include "bench.h"

typedef struct ref_srv_ctx {
    nng_ctx ctx;
    nng_aio *aio;
    bool sending;
} ref_srv_ctx;

static void ref_srv_cb(void *arg)
{
    ref_srv_ctx *c = arg;

    if (nng_aio_result(c->aio) != 0) {
        if (c->sending) {
            nng_msg_free(nng_aio_get_msg(c->aio));
        }
        if (nng_aio_result(c->aio) == NNG_ECLOSED) {
            return;
        }
        c->sending = false;
        nng_ctx_recv(c->ctx, c->aio);
        return;
    }
    if (c->sending) {
        c->sending = false;
        nng_ctx_recv(c->ctx, c->aio);
        return;
    }
    c->sending = true;
    nng_aio_set_msg(c->aio, nng_aio_get_msg(c->aio)); /* echo the request as it came */
    nng_ctx_send(c->ctx, c->aio);
}

int bench_ref_server(const char *url, int contexts)
{
    nng_socket s;
    ref_srv_ctx *cs = calloc((size_t)contexts, sizeof(*cs));
    sigset_t set;
    int sig, rv, code = 1;

    if (cs == NULL) {
        return 1;
    }
    if ((rv = nng_rep0_open(&s)) != 0) {
        fprintf(stderr, "nng-echo: open: %s\n", nng_strerror(rv));
        goto out_free;
    }
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* before nng starts its threads */
    for (int i = 0; i < contexts; i++) {
        if (nng_ctx_open(&cs[i].ctx, s) != 0 ||
            nng_aio_alloc(&cs[i].aio, ref_srv_cb, &cs[i]) != 0) {
            fprintf(stderr, "nng-echo: context %d failed\n", i);
            goto out_close;
        }
    }
    if ((rv = nng_listen(s, url, NULL, 0)) != 0) {
        fprintf(stderr, "nng-echo: listen %s: %s\n", url, nng_strerror(rv));
        goto out_close;
    }
    for (int i = 0; i < contexts; i++) {
        nng_ctx_recv(cs[i].ctx, cs[i].aio);
    }
    sigwait(&set, &sig);
    code = 0;
out_close:
    nng_close(s);
    for (int i = 0; i < contexts; i++) {
        if (cs[i].aio != NULL) {
            nng_aio_free(cs[i].aio);
        }
    }
out_free:
    free(cs);
    return code;
}

typedef struct ref_cli ref_cli;

/* One in-flight request: a REQ context and its aio, driven by callbacks on nng's threads. */
typedef struct ref_slot {
    ref_cli *rc;
    nng_ctx ctx;
    nng_aio *aio;
    bool receiving;
    uint64_t t0;
} ref_slot;

struct ref_cli {
    nng_socket s;
    uint64_t rec_from, end;
    bench_result *r;
    uint64_t ok, failed;
    uint64_t active; /* slots still running */
    uint8_t body[BENCH_BODY_LEN];
};

/* ref_slot_send starts the next request of slot, or retires the slot when the time is up. */
static void ref_slot_send(ref_slot *sl)
{
    ref_cli *rc = sl->rc;
    nng_msg *m;

    sl->t0 = bench_now_ns();
    if (sl->t0 >= rc->end || bench_interrupted || nng_msg_alloc(&m, 0) != 0) {
        __atomic_fetch_sub(&rc->active, 1, __ATOMIC_RELEASE);
        return;
    }
    if (nng_msg_append(m, rc->body, sizeof(rc->body)) != 0) {
        nng_msg_free(m);
        __atomic_fetch_sub(&rc->active, 1, __ATOMIC_RELEASE);
        return;
    }
    sl->receiving = false;
    nng_aio_set_msg(sl->aio, m);
    nng_ctx_send(sl->ctx, sl->aio);
}

static void ref_slot_cb(void *arg)
{
    ref_slot *sl = arg;
    ref_cli *rc = sl->rc;
    int rv = nng_aio_result(sl->aio);

    if (!sl->receiving) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(sl->aio));
            bench_add(&rc->failed, 1);
            ref_slot_send(sl);
            return;
        }
        sl->receiving = true;
        nng_ctx_recv(sl->ctx, sl->aio);
        return;
    }
    uint64_t t1 = bench_now_ns();
    bool good = false;
    if (rv == 0) {
        nng_msg *rep = nng_aio_get_msg(sl->aio);
        good = nng_msg_len(rep) == sizeof(rc->body);
        nng_msg_free(rep);
    }
    if (sl->t0 >= rc->rec_from) {
        if (good) {
            bench_add(&rc->ok, 1);
            bench_add(&bench_live_now.ok, 1);
            bench_hist_record(&rc->r->lat, t1 - sl->t0);
            size_t slot = (size_t)((double)(t1 - rc->rec_from) / 1e9 / BENCH_SERIES_STEP);
            if (slot < BENCH_SERIES_MAX) {
                __atomic_fetch_add(&rc->r->series[slot], 1, __ATOMIC_RELAXED);
            }
        } else {
            bench_add(&rc->failed, 1);
            bench_add(&bench_live_now.failed, 1);
        }
    }
    ref_slot_send(sl);
}

int bench_ref_client(const char *url, int inflight, double secs, bench_result *r)
{
    ref_cli *rc = calloc(1, sizeof(*rc));
    ref_slot *slots = calloc((size_t)inflight, sizeof(*slots));
    int rv, n = 0, code = -1;
    uint64_t warm = (uint64_t)((secs * 0.15 < 0.3 ? 0.3 : secs * 0.15) * 1e9);

    snprintf(r->name, sizeof(r->name), "nng-reqrep-c%d", inflight);
    snprintf(r->what, sizeof(r->what),
             "raw nng REQ/REP echo over ipc, %d contexts in flight (reference)", inflight);
    snprintf(r->unit, sizeof(r->unit), "rt/s");
    if (rc == NULL || slots == NULL) {
        goto out_free;
    }
    rc->r = r;
    memset(rc->body, 'x', sizeof(rc->body));
    if ((rv = nng_req0_open(&rc->s)) != 0) {
        snprintf(r->note, sizeof(r->note), "req open: %s", nng_strerror(rv));
        goto out_free;
    }
    nng_setopt_ms(rc->s, NNG_OPT_REQ_RESENDTIME, 60000);
    for (int tries = 0; (rv = nng_dial(rc->s, url, NULL, 0)) != 0 && tries < 200; tries++) {
        usleep(10000); /* the server process is still starting */
    }
    if (rv != 0) {
        snprintf(r->note, sizeof(r->note), "dial %s: %s", url, nng_strerror(rv));
        goto out_close;
    }
    for (; n < inflight; n++) {
        slots[n].rc = rc;
        if (nng_ctx_open(&slots[n].ctx, rc->s) != 0 ||
            nng_aio_alloc(&slots[n].aio, ref_slot_cb, &slots[n]) != 0) {
            snprintf(r->note, sizeof(r->note), "context %d failed", n);
            goto out_close;
        }
        nng_aio_set_timeout(slots[n].aio, 5000);
    }
    bench_live_begin(r->name, secs, &r->lat);
    uint64_t t0 = bench_now_ns();
    rc->rec_from = t0 + warm;
    rc->end = rc->rec_from + (uint64_t)(secs * 1e9);
    rc->active = (uint64_t)n;
    for (int i = 0; i < n; i++) {
        ref_slot_send(&slots[i]);
    }
    while (__atomic_load_n(&rc->active, __ATOMIC_ACQUIRE) > 0) {
        usleep(10000);
    }
    r->secs = (double)(rc->end - rc->rec_from) / 1e9;
    r->ok = rc->ok;
    r->failed = rc->failed;
    r->total = rc->ok + rc->failed;
    r->rate = r->secs > 0 ? (double)r->ok / r->secs : 0;
    r->ratio = 1.0;
    r->n_series = (size_t)(r->secs / BENCH_SERIES_STEP + 0.5);
    r->available = r->ok > 0;
    code = r->ok > 0 ? 0 : -1;
out_close:
    nng_close(rc->s);
    for (int i = 0; i < inflight; i++) {
        if (slots[i].aio != NULL) {
            nng_aio_free(slots[i].aio);
        }
    }
out_free:
    free(slots);
    free(rc);
    return code;
}
