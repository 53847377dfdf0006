/*
 * daemon/store/audit.c - hash-chained audit trail. See audit.h.
 */
#include "daemon/store/store_int.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

typedef struct store_audit_job {
    store *st;
    store_job_done_fn done;
    void *arg;
    size_t event_len, detail_len;
    char *detail; /* points into text[] after the event */
    char text[];
} store_audit_job;

static void store_audit_be(uint8_t *out, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        out[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

void store_audit_hash(const uint8_t prev[STORE_AUDIT_HASH_LEN], uint64_t seq, uint64_t ts,
                      const char *event, size_t event_len, const char *detail, size_t detail_len,
                      uint8_t out[STORE_AUDIT_HASH_LEN])
{
    crypto_hash_sha256_state h;
    uint8_t num[8];

    crypto_hash_sha256_init(&h);
    crypto_hash_sha256_update(&h, prev, STORE_AUDIT_HASH_LEN);
    store_audit_be(num, seq, 8);
    crypto_hash_sha256_update(&h, num, 8);
    store_audit_be(num, ts, 8);
    crypto_hash_sha256_update(&h, num, 8);
    store_audit_be(num, event_len, 4);
    crypto_hash_sha256_update(&h, num, 4);
    crypto_hash_sha256_update(&h, (const uint8_t *)event, event_len);
    store_audit_be(num, detail_len, 4);
    crypto_hash_sha256_update(&h, num, 4);
    crypto_hash_sha256_update(&h, (const uint8_t *)detail, detail_len);
    crypto_hash_sha256_final(&h, out);
}

hsb_err store_audit_load_head(store *st)
{
    store_conn *c;
    store_stmt *s;
    hsb_err err;
    int rc;

    if (sodium_init() < 0) {
        return HSB_EINTERNAL;
    }
    err = store_pool_checkout(st->pool, st->cfg.checkout_timeout_ms, &c);
    if (err != HSB_OK) {
        return err;
    }
    err = store_conn_stmt(c, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &s);
    if (err != HSB_OK) {
        goto checkin;
    }
    memset(st->audit_hash, 0, sizeof(st->audit_hash));
    st->audit_seq = 0;
    rc = sqlite3_step(s->stmt);
    if (rc == SQLITE_ROW) {
        st->audit_seq = (uint64_t)sqlite3_column_int64(s->stmt, 0);
        if (sqlite3_column_bytes(s->stmt, 1) == STORE_HASH_LEN) {
            memcpy(st->audit_hash, sqlite3_column_blob(s->stmt, 1), STORE_HASH_LEN);
        } else {
            err = HSB_EIO;
        }
    } else if (rc != SQLITE_DONE) {
        err = HSB_EIO;
    }
    store_conn_put(c, s);
    st->audit_pending_seq = st->audit_seq;
    memcpy(st->audit_pending_hash, st->audit_hash, STORE_HASH_LEN);
    __atomic_store_n(&st->audit_committed_seq_shared, st->audit_seq, __ATOMIC_RELAXED);
checkin:
    store_pool_checkin(st->pool, c);
    return err;
}

void store_audit_after_group(store *st, bool committed)
{
    if (committed) {
        st->audit_seq = st->audit_pending_seq;
        memcpy(st->audit_hash, st->audit_pending_hash, STORE_HASH_LEN);
        __atomic_store_n(&st->audit_committed_seq_shared, st->audit_seq, __ATOMIC_RELAXED);
    } else {
        st->audit_pending_seq = st->audit_seq;
        memcpy(st->audit_pending_hash, st->audit_hash, STORE_HASH_LEN);
    }
}

static hsb_err store_audit_run(store_conn *c, void *arg)
{
    store_audit_job *j = arg;
    store *st = j->st;
    uint64_t seq = st->audit_pending_seq + 1;
    uint64_t ts = store_now_wall(st);
    uint8_t hash[STORE_HASH_LEN];

    store_audit_hash(st->audit_pending_hash, seq, ts, j->text, j->event_len, j->detail,
                     j->detail_len, hash);
    hsb_value v[6] = {
        {.type = HSB_VALUE_INT, .u.i = (int64_t)seq},
        {.type = HSB_VALUE_INT, .u.i = (int64_t)ts},
        {.type = HSB_VALUE_TEXT, .u.s = {j->text, j->event_len}},
        {.type = HSB_VALUE_TEXT, .u.s = {j->detail, j->detail_len}},
        {.type = HSB_VALUE_BLOB, .u.s = {st->audit_pending_hash, STORE_HASH_LEN}},
        {.type = HSB_VALUE_BLOB, .u.s = {hash, STORE_HASH_LEN}},
    };
    hsb_err err = store_conn_exec(
        c, "INSERT INTO audit(seq, ts, event, detail, prev_hash, hash) VALUES (?,?,?,?,?,?)", v, 6,
        NULL);
    if (err == HSB_OK) {
        st->audit_pending_seq = seq;
        memcpy(st->audit_pending_hash, hash, STORE_HASH_LEN);
    }
    return err;
}

static void store_audit_done(void *arg, hsb_err err)
{
    store_audit_job *j = arg;
    if (j->done != NULL) {
        j->done(j->arg, err);
    }
    free(j);
}

hsb_err store_audit_append(store *st, const char *event, const char *detail, unsigned flags,
                           store_job_done_fn done, void *arg)
{
    if (event == NULL) {
        return HSB_EINVAL;
    }
    if (detail == NULL) {
        detail = "";
    }
    size_t el = strlen(event), dl = strlen(detail);
    store_audit_job *j = malloc(sizeof(*j) + el + dl + 2);
    if (j == NULL) {
        return HSB_ENOMEM;
    }
    j->st = st;
    j->done = done;
    j->arg = arg;
    j->event_len = el;
    j->detail_len = dl;
    memcpy(j->text, event, el + 1);
    j->detail = j->text + el + 1;
    memcpy(j->detail, detail, dl + 1);
    hsb_err err = store_pool_submit(st->pool, store_audit_run, store_audit_done, j, flags);
    if (err != HSB_OK) {
        free(j);
    }
    return err;
}

hsb_err store_audit_verify(store *st, store_audit_report *rep)
{
    store_conn *c;
    store_stmt *s;
    hsb_err err;
    int rc;
    uint8_t prev[STORE_HASH_LEN] = {0};
    uint8_t calc[STORE_HASH_LEN];
    uint64_t expect_seq = 1;

    memset(rep, 0, sizeof(*rep));
    rep->ok = true;
    err = store_pool_checkout(st->pool, st->cfg.checkout_timeout_ms, &c);
    if (err != HSB_OK) {
        return err;
    }
    err = store_conn_stmt(c,
                          "SELECT seq, ts, event, detail, prev_hash, hash FROM audit "
                          "ORDER BY seq",
                          &s);
    if (err != HSB_OK) {
        goto checkin;
    }
    while ((rc = sqlite3_step(s->stmt)) == SQLITE_ROW) {
        uint64_t seq = (uint64_t)sqlite3_column_int64(s->stmt, 0);
        uint64_t ts = (uint64_t)sqlite3_column_int64(s->stmt, 1);
        const char *ev = (const char *)sqlite3_column_text(s->stmt, 2);
        size_t evl = (size_t)sqlite3_column_bytes(s->stmt, 2);
        const char *de = (const char *)sqlite3_column_text(s->stmt, 3);
        size_t del = (size_t)sqlite3_column_bytes(s->stmt, 3);
        const void *ph = sqlite3_column_blob(s->stmt, 4);
        size_t phl = (size_t)sqlite3_column_bytes(s->stmt, 4);
        const void *h = sqlite3_column_blob(s->stmt, 5);
        size_t hl = (size_t)sqlite3_column_bytes(s->stmt, 5);

        rep->rows++;
        rep->last_seq = seq;
        store_audit_hash(prev, seq, ts, ev ? ev : "", evl, de ? de : "", del, calc);
        bool good = seq == expect_seq && phl == STORE_HASH_LEN && hl == STORE_HASH_LEN &&
                    sodium_memcmp(ph, prev, STORE_HASH_LEN) == 0 &&
                    sodium_memcmp(h, calc, STORE_HASH_LEN) == 0;
        if (!good && rep->ok) {
            rep->ok = false;
            rep->first_bad_seq = seq;
        }
        /* Continue from the stored hash so later rows are checked against what they claim. */
        if (hl == STORE_HASH_LEN) {
            memcpy(prev, h, STORE_HASH_LEN);
        } else {
            memcpy(prev, calc, STORE_HASH_LEN);
        }
        expect_seq = seq + 1;
    }
    if (rc != SQLITE_DONE) {
        err = HSB_EIO;
    }
    store_conn_put(c, s);
checkin:
    store_pool_checkin(st->pool, c);
    return err;
}
