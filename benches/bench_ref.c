/*
 * benches/bench_ref.c - the raw nng reference: REQ/REP echo over the same transport.
 *
 * The server (`hsbus-bench --role nng-echo`, a separate process like the daemon) is nng's own
 * context-based REP pattern: n contexts, each an aio state machine recv -> send -> recv. The client
 * runs `inflight` threads, each with its own REQ context, sending a BENCH_BODY_LEN-byte message and
 * waiting for the echo: exactly the shape of the broker's closed-loop workload (16 threads calling
 * hsbus_request), without the broker, the agent protocol or msgpack. Every workload is reported as
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

typedef struct ref_cli {
    nng_socket s;
    uint64_t rec_from, end;
    bench_result *r;
    uint64_t ok, failed;
} ref_cli;

static void *ref_cli_thread(void *arg)
{
    ref_cli *rc = arg;
    nng_ctx ctx;
    nng_aio *aio = NULL;
    uint8_t body[BENCH_BODY_LEN];

    memset(body, 'x', sizeof(body));
    if (nng_ctx_open(&ctx, rc->s) != 0 || nng_aio_alloc(&aio, NULL, NULL) != 0) {
        bench_add(&rc->failed, 1);
        return NULL;
    }
    nng_aio_set_timeout(aio, 5000);
    for (;;) {
        uint64_t t0 = bench_now_ns();
        if (t0 >= rc->end || bench_interrupted) {
            break;
        }
        nng_msg *m;
        if (nng_msg_alloc(&m, 0) != 0 || nng_msg_append(m, body, sizeof(body)) != 0) {
            break;
        }
        nng_aio_set_msg(aio, m);
        nng_ctx_send(ctx, aio);
        nng_aio_wait(aio);
        if (nng_aio_result(aio) != 0) {
            nng_msg_free(m);
            bench_add(&rc->failed, 1);
            continue;
        }
        nng_ctx_recv(ctx, aio);
        nng_aio_wait(aio);
        int rv = nng_aio_result(aio);
        uint64_t t1 = bench_now_ns();
        if (rv == 0) {
            nng_msg *rep = nng_aio_get_msg(aio);
            bool good = nng_msg_len(rep) == sizeof(body);
            nng_msg_free(rep);
            if (t0 >= rc->rec_from) {
                if (good) {
                    bench_add(&rc->ok, 1);
                    bench_add(&bench_live_now.ok, 1);
                    bench_hist_record(&rc->r->lat, t1 - t0);
                    size_t slot = (size_t)((double)(t1 - rc->rec_from) / 1e9 / BENCH_SERIES_STEP);
                    if (slot < BENCH_SERIES_MAX) {
                        __atomic_fetch_add(&rc->r->series[slot], 1, __ATOMIC_RELAXED);
                    }
                } else {
                    bench_add(&rc->failed, 1);
                }
            }
        } else if (t0 >= rc->rec_from) {
            bench_add(&rc->failed, 1);
            bench_add(&bench_live_now.failed, 1);
        }
    }
    nng_aio_free(aio);
    nng_ctx_close(ctx);
    return NULL;
}

int bench_ref_client(const char *url, int inflight, double secs, bench_result *r)
{
    ref_cli rc = {.r = r};
    pthread_t th[256];
    int rv, n = inflight > 256 ? 256 : inflight;
    uint64_t warm = (uint64_t)(secs * 0.15e9);

    snprintf(r->name, sizeof(r->name), "nng-reqrep-c%d", n);
    snprintf(r->what, sizeof(r->what), "raw nng REQ/REP echo over ipc, %d in flight (reference)",
             n);
    snprintf(r->unit, sizeof(r->unit), "rt/s");
    if ((rv = nng_req0_open(&rc.s)) != 0) {
        snprintf(r->note, sizeof(r->note), "req open: %s", nng_strerror(rv));
        return -1;
    }
    nng_setopt_ms(rc.s, NNG_OPT_REQ_RESENDTIME, 60000);
    for (int tries = 0; (rv = nng_dial(rc.s, url, NULL, 0)) != 0 && tries < 200; tries++) {
        usleep(10000); /* the server process is still starting */
    }
    if (rv != 0) {
        snprintf(r->note, sizeof(r->note), "dial %s: %s", url, nng_strerror(rv));
        nng_close(rc.s);
        return -1;
    }
    bench_live_begin(r->name, secs, &r->lat);
    uint64_t t0 = bench_now_ns();
    rc.rec_from = t0 + warm;
    rc.end = t0 + warm + (uint64_t)(secs * 1e9);
    int started = 0;
    for (; started < n; started++) {
        if (pthread_create(&th[started], NULL, ref_cli_thread, &rc) != 0) {
            break;
        }
    }
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
    }
    nng_close(rc.s);
    r->secs = (double)(bench_now_ns() - rc.rec_from) / 1e9;
    r->ok = rc.ok;
    r->failed = rc.failed;
    r->total = rc.ok + rc.failed;
    r->rate = r->secs > 0 ? (double)r->ok / r->secs : 0;
    r->ratio = 1.0;
    r->n_series = (size_t)(r->secs / BENCH_SERIES_STEP);
    r->available = r->ok > 0;
    return r->ok > 0 ? 0 : -1;
}
