/*
 * tests/integration/test_durable.c - durable messages through a real hsbusd and its SQLite file,
 * including the crash test: the daemon is killed with SIGKILL at random moments while clients send
 * durable messages and consume them; after every restart, every message whose send was
 * acknowledged must still be delivered (redeliveries are allowed: at-least-once).
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hsbus.h>
#include <sodium.h>
#include <sqlite3.h>

#include "harness.h"

static hsbus_client *td_connect(const ith_daemon *d, const char *agent, int timeout_ms)
{
    hsbus_opts o = {.agent = agent, .timeout_ms = timeout_ms};
    hsbus_client *c = NULL;
    if (hsbus_connect(d->url, &o, &c) != HSBUS_OK) {
        return NULL;
    }
    return c;
}

static void td_durable_msg(hsbus_msg *m, const char *to, const char *body)
{
    hsbus_msg_init(m);
    snprintf(m->to, sizeof(m->to), "%s", to);
    m->durable = true;
    m->ttl_ms = 600000;
    hsbus_msg_set_body_str(m, body, strlen(body));
}

/* td_durable_rows counts the rows of the durable table in the daemon's database file (read-only,
 * beside the running daemon: WAL lets a reader in). Returns -1 on error. */
static int td_durable_rows(const ith_daemon *d)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/var/hsbus.db", d->dir);
    sqlite3 *db = NULL;
    int rows = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, "SELECT count(*) FROM durable", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW) {
            rows = sqlite3_column_int(st, 0);
        }
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return rows;
}

static void t_durable_survives_kill(void **state)
{
    (void)state;
    ith_daemon d;
    assert_true(ith_start(&d, NULL));
    hsbus_client *w = td_connect(&d, "worker", 5000);
    hsbus_client *a = td_connect(&d, "alice", 5000);
    assert_non_null(w);
    assert_non_null(a);

    hsbus_msg m;
    uint64_t kept = 0, acked = 0;
    td_durable_msg(&m, "worker", "keep me");
    assert_int_equal(hsbus_send(a, &m, &kept), HSBUS_OK);
    hsbus_msg_clear(&m);
    td_durable_msg(&m, "worker", "done with me");
    assert_int_equal(hsbus_send(a, &m, &acked), HSBUS_OK);
    hsbus_msg_clear(&m);

    /* The worker handles the second one only: it is acked, so it must not come back. */
    hsbus_msg *got[4];
    size_t n = 0;
    assert_int_equal(hsbus_fetch(w, 4, 5000, got, &n), HSBUS_OK);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        if (got[i]->id == acked) {
            hsbus_ack(w, got[i]->id);
        }
        hsbus_msg_free(&got[i]);
    }
    assert_int_equal(hsbus_flush_acks(w), HSBUS_OK);
    hsbus_close(&a);
    /* An ack is applied to the store asynchronously (at-least-once allows a redelivery if the
     * daemon dies first): wait, bounded, until the acked message's row is gone. */
    for (int i = 0; i < 200 && td_durable_rows(&d) != 1; i++) {
        ith_sleep_ms(10);
    }
    assert_int_equal(td_durable_rows(&d), 1);

    ith_kill(&d); /* no drain, no goodbye */
    hsbus_close(&w);
    assert_true(ith_restart(&d, NULL));
    if (!ith_log_contains(&d, "event=restored queued=1")) {
        ith_print_log(&d);
        fail_msg("the restart did not re-queue exactly the unacked durable message");
    }

    w = td_connect(&d, "worker", 5000);
    assert_non_null(w);
    n = 0;
    assert_int_equal(hsbus_fetch(w, 4, 5000, got, &n), HSBUS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(got[0]->id, kept);
    /* Delivered once before the crash (in flight, never acked): this is the second delivery. */
    assert_int_equal(got[0]->deliveries, 2);
    hsbus_ack(w, got[0]->id);
    hsbus_msg_free(&got[0]);
    assert_int_equal(hsbus_flush_acks(w), HSBUS_OK);
    hsbus_close(&w);
    assert_int_equal(ith_stop(&d, false), 0);
}

/* ---- the crash test ------------------------------------------------------------------------ */

typedef struct td_ids {
    uint64_t *v;
    size_t n, cap;
} td_ids;

static void td_ids_add(td_ids *s, uint64_t id)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
        assert_non_null(s->v);
    }
    s->v[s->n++] = id;
}

static int td_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct td_killer {
    pid_t pid;
    unsigned delay_ms;
} td_killer;

static void *td_killer_main(void *arg)
{
    td_killer *k = arg;
    ith_sleep_ms(k->delay_ms);
    kill(k->pid, SIGKILL);
    return NULL;
}

/* td_consume fetches what is there (bounded wait), records every id and acks it. Returns false
 * when the daemon is gone. */
static bool td_consume(hsbus_client *c, td_ids *received, int wait_ms, size_t *got)
{
    hsbus_msg *msgs[64];
    size_t n = 0;
    if (hsbus_fetch(c, 64, wait_ms, msgs, &n) != HSBUS_OK) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        td_ids_add(received, msgs[i]->id);
        hsbus_ack(c, msgs[i]->id);
        hsbus_msg_free(&msgs[i]);
    }
    *got = n;
    return true;
}

static void t_crash_test(void **state)
{
    (void)state;
    const int rounds = getenv("HSB_CRASH_ROUNDS") ? atoi(getenv("HSB_CRASH_ROUNDS")) : 6;
    td_ids acked = {0}, received = {0};
    size_t send_failures = 0;
    ith_daemon d;
    assert_true(ith_start(&d, NULL));

    for (int r = 0; r < rounds; r++) {
        if (r > 0) {
            assert_true(ith_restart(&d, NULL));
        }
        hsbus_client *w = td_connect(&d, "worker", 2000);
        hsbus_client *p = td_connect(&d, "producer", 2000);
        assert_non_null(w);
        assert_non_null(p);
        td_killer k = {.pid = d.pid, .delay_ms = 150 + randombytes_uniform(650)};
        pthread_t kt;
        assert_int_equal(pthread_create(&kt, NULL, td_killer_main, &k), 0);

        bool alive = true;
        for (unsigned seq = 0; alive; seq++) {
            hsbus_msg batch[8];
            hsbus_result res[8];
            for (int i = 0; i < 8; i++) {
                char body[48];
                snprintf(body, sizeof(body), "round %d seq %u.%d", r, seq, i);
                td_durable_msg(&batch[i], "worker", body);
            }
            hsbus_err err = hsbus_send_batch(p, batch, 8, res);
            for (int i = 0; i < 8; i++) {
                if (err == HSBUS_OK && res[i].err == HSBUS_OK) {
                    td_ids_add(&acked, res[i].id); /* acknowledged: must never be lost */
                } else {
                    send_failures++;
                }
                hsbus_msg_clear(&batch[i]);
            }
            size_t got;
            alive = err == HSBUS_OK && td_consume(w, &received, 0, &got);
        }
        pthread_join(kt, NULL);
        ith_kill(&d);
        hsbus_close(&p);
        hsbus_close(&w);
    }

    /* Final restart: everything acknowledged and not yet consumed must come back. */
    assert_true(ith_restart(&d, NULL));
    hsbus_client *w = td_connect(&d, "worker", 5000);
    assert_non_null(w);
    size_t got = 1;
    for (int quiet = 0; quiet < 3;) {
        assert_true(td_consume(w, &received, 500, &got));
        quiet = got == 0 ? quiet + 1 : 0;
    }
    assert_int_equal(hsbus_flush_acks(w), HSBUS_OK);
    hsbus_close(&w);
    assert_int_equal(ith_stop(&d, false), 0);

    qsort(acked.v, acked.n, sizeof(uint64_t), td_cmp);
    qsort(received.v, received.n, sizeof(uint64_t), td_cmp);
    size_t lost = 0, unique = 0, redelivered = 0, j = 0;
    for (size_t i = 0; i < received.n; i++) {
        if (i > 0 && received.v[i] == received.v[i - 1]) {
            redelivered++;
        } else {
            unique++;
        }
    }
    for (size_t i = 0; i < acked.n; i++) {
        while (j < received.n && received.v[j] < acked.v[i]) {
            j++;
        }
        if (j == received.n || received.v[j] != acked.v[i]) {
            lost++;
            if (lost <= 5) {
                fprintf(stderr, "lost: id %llu\n", (unsigned long long)acked.v[i]);
            }
        }
    }
    printf("crash test: %d SIGKILLs, %zu sends acknowledged, %zu sends failed by the crash "
           "(never acknowledged), %zu delivered (%zu unique), %zu redeliveries, %zu lost\n",
           rounds, acked.n, send_failures, received.n, unique, redelivered, lost);
    assert_true(acked.n > 0);
    assert_int_equal(lost, 0);
    free(acked.v);
    free(received.v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_durable_survives_kill),
        cmocka_unit_test(t_crash_test),
    };
    signal(SIGPIPE, SIG_IGN);
    if (sodium_init() < 0) {
        return 1;
    }
    return cmocka_run_group_tests_name("durable", tests, NULL, NULL);
}
