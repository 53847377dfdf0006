/*
 * daemon/store/dlq.c - dead letters. See dlq.h.
 */
#include "daemon/store/store_int.h"

#include <stdlib.h>
#include <string.h>

#define STORE_DLQ_COLS "id, msg_id, agent, reason, deliveries, envelope, ts"

typedef struct store_dlq_job {
    store_job_done_fn done;
    void *arg;
    uint64_t msg_id;
    uint32_t deliveries;
    uint64_t ts;
    size_t envelope_len;
    char *agent;
    char *reason;
    uint8_t data[];
} store_dlq_job;

static hsb_err store_dlq_add_run(store_conn *c, void *arg)
{
    store_dlq_job *j = arg;
    hsb_value v[6] = {
        {.type = HSB_VALUE_INT, .u.i = (int64_t)j->msg_id},
        {.type = HSB_VALUE_TEXT, .u.s = {j->agent, strlen(j->agent)}},
        {.type = HSB_VALUE_TEXT, .u.s = {j->reason, strlen(j->reason)}},
        {.type = HSB_VALUE_INT, .u.i = j->deliveries},
        {.type = HSB_VALUE_BLOB, .u.s = {j->data, j->envelope_len}},
        {.type = HSB_VALUE_INT, .u.i = (int64_t)j->ts},
    };
    return store_conn_exec(c,
                           "INSERT INTO dead_letters(msg_id, agent, reason, deliveries, envelope, "
                           "ts) VALUES (?,?,?,?,?,?)",
                           v, 6, NULL);
}

static void store_dlq_add_done(void *arg, hsb_err err)
{
    store_dlq_job *j = arg;
    if (j->done != NULL) {
        j->done(j->arg, err);
    }
    free(j);
}

hsb_err store_dlq_add(store *st, const store_dlq_rec *rec, unsigned flags, store_job_done_fn done,
                      void *arg)
{
    if (rec == NULL || rec->envelope == NULL) {
        return HSB_EINVAL;
    }
    const char *agent = rec->agent ? rec->agent : "";
    const char *reason = rec->reason ? rec->reason : "";
    size_t al = strlen(agent), rl = strlen(reason);
    store_dlq_job *j = malloc(sizeof(*j) + rec->envelope_len + al + rl + 2);
    if (j == NULL) {
        return HSB_ENOMEM;
    }
    j->done = done;
    j->arg = arg;
    j->msg_id = rec->msg_id;
    j->deliveries = rec->deliveries;
    j->ts = rec->ts != 0 ? rec->ts : store_now_wall(st);
    j->envelope_len = rec->envelope_len;
    memcpy(j->data, rec->envelope, rec->envelope_len);
    j->agent = (char *)j->data + rec->envelope_len;
    memcpy(j->agent, agent, al + 1);
    j->reason = j->agent + al + 1;
    memcpy(j->reason, reason, rl + 1);
    hsb_err err = store_pool_submit(st->pool, store_dlq_add_run, store_dlq_add_done, j, flags);
    if (err != HSB_OK) {
        free(j);
    }
    return err;
}

static void store_dlq_rec_from_row(sqlite3_stmt *row, store_dlq_rec *rec)
{
    const char *agent = (const char *)sqlite3_column_text(row, 2);
    const char *reason = (const char *)sqlite3_column_text(row, 3);
    rec->id = (uint64_t)sqlite3_column_int64(row, 0);
    rec->msg_id = (uint64_t)sqlite3_column_int64(row, 1);
    rec->agent = agent ? agent : "";
    rec->reason = reason ? reason : "";
    rec->deliveries = (uint32_t)sqlite3_column_int64(row, 4);
    rec->envelope = sqlite3_column_blob(row, 5);
    rec->envelope_len = (size_t)sqlite3_column_bytes(row, 5);
    rec->ts = (uint64_t)sqlite3_column_int64(row, 6);
}

typedef struct store_dlq_read_ctx {
    store_dlq_fn fn;
    void *arg;
    size_t rows;
} store_dlq_read_ctx;

static bool store_dlq_read_row(void *arg, sqlite3_stmt *row)
{
    store_dlq_read_ctx *ctx = arg;
    store_dlq_rec rec;
    store_dlq_rec_from_row(row, &rec);
    ctx->rows++;
    return ctx->fn(ctx->arg, &rec);
}

hsb_err store_dlq_list(store *st, uint64_t after_id, size_t limit, store_dlq_fn fn, void *arg)
{
    store_dlq_read_ctx ctx = {fn, arg, 0};
    hsb_value v[2] = {
        {.type = HSB_VALUE_INT, .u.i = (int64_t)after_id},
        {.type = HSB_VALUE_INT, .u.i = limit > INT64_MAX ? INT64_MAX : (int64_t)limit},
    };
    return store_read(st,
                      "SELECT " STORE_DLQ_COLS " FROM dead_letters WHERE id > ? ORDER BY id "
                      "LIMIT ?",
                      v, 2, store_dlq_read_row, &ctx);
}

hsb_err store_dlq_get(store *st, uint64_t id, store_dlq_fn fn, void *arg)
{
    store_dlq_read_ctx ctx = {fn, arg, 0};
    hsb_value v = {.type = HSB_VALUE_INT, .u.i = (int64_t)id};
    hsb_err err = store_read(st, "SELECT " STORE_DLQ_COLS " FROM dead_letters WHERE id = ?", &v, 1,
                             store_dlq_read_row, &ctx);
    if (err == HSB_OK && ctx.rows == 0) {
        err = HSB_ENOTFOUND;
    }
    return err;
}

static bool store_dlq_u64_row(void *arg, sqlite3_stmt *row)
{
    *(uint64_t *)arg = (uint64_t)sqlite3_column_int64(row, 0);
    return false;
}

hsb_err store_dlq_count(store *st, uint64_t *out)
{
    *out = 0;
    return store_read(st, "SELECT count(*) FROM dead_letters", NULL, 0, store_dlq_u64_row, out);
}

/* ---- purge ------------------------------------------------------------------------------ */

typedef struct store_dlq_purge_job {
    store_dlq_purge_fn done;
    void *arg;
    uint64_t id;
    uint64_t purged;
} store_dlq_purge_job;

static hsb_err store_dlq_purge_run(store_conn *c, void *arg)
{
    store_dlq_purge_job *j = arg;
    int changes = 0;
    hsb_err err;

    if (j->id == 0) {
        err = store_conn_exec(c, "DELETE FROM dead_letters", NULL, 0, &changes);
    } else {
        hsb_value v = {.type = HSB_VALUE_INT, .u.i = (int64_t)j->id};
        err = store_conn_exec(c, "DELETE FROM dead_letters WHERE id = ?", &v, 1, &changes);
        if (err == HSB_OK && changes == 0) {
            err = HSB_ENOTFOUND;
        }
    }
    j->purged = err == HSB_OK ? (uint64_t)changes : 0;
    return err;
}

static void store_dlq_purge_done(void *arg, hsb_err err)
{
    store_dlq_purge_job *j = arg;
    if (j->done != NULL) {
        j->done(j->arg, err, err == HSB_OK ? j->purged : 0);
    }
    free(j);
}

hsb_err store_dlq_purge(store *st, uint64_t id, store_dlq_purge_fn done, void *arg)
{
    store_dlq_purge_job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        return HSB_ENOMEM;
    }
    j->done = done;
    j->arg = arg;
    j->id = id;
    hsb_err err = store_pool_submit(st->pool, store_dlq_purge_run, store_dlq_purge_done, j, 0);
    if (err != HSB_OK) {
        free(j);
    }
    return err;
}

/* ---- take (for replay) ------------------------------------------------------------------ */

typedef struct store_dlq_take_job {
    store_dlq_take_fn done;
    void *arg;
    uint64_t id;
    store_dlq_rec rec;
    uint8_t *copy; /* envelope, agent, reason */
} store_dlq_take_job;

static hsb_err store_dlq_take_run(store_conn *c, void *arg)
{
    store_dlq_take_job *j = arg;
    store_stmt *s;
    hsb_value v = {.type = HSB_VALUE_INT, .u.i = (int64_t)j->id};
    hsb_err err =
        store_conn_stmt(c, "SELECT " STORE_DLQ_COLS " FROM dead_letters WHERE id = ?", &s);
    if (err != HSB_OK) {
        return err;
    }
    err = store_stmt_bind(s, &v, 1);
    if (err == HSB_OK) {
        int rc = sqlite3_step(s->stmt);
        if (rc == SQLITE_ROW) {
            store_dlq_rec r;
            store_dlq_rec_from_row(s->stmt, &r);
            size_t al = strlen(r.agent), rl = strlen(r.reason);
            free(j->copy); /* a replayed group runs this again */
            j->copy = malloc(r.envelope_len + al + rl + 2);
            if (j->copy == NULL) {
                err = HSB_ENOMEM;
            } else {
                j->rec = r;
                memcpy(j->copy, r.envelope, r.envelope_len);
                j->rec.envelope = j->copy;
                memcpy(j->copy + r.envelope_len, r.agent, al + 1);
                j->rec.agent = (char *)j->copy + r.envelope_len;
                memcpy(j->copy + r.envelope_len + al + 1, r.reason, rl + 1);
                j->rec.reason = (char *)j->copy + r.envelope_len + al + 1;
            }
        } else {
            err = rc == SQLITE_DONE ? HSB_ENOTFOUND : HSB_EIO;
        }
    }
    store_conn_put(c, s);
    if (err == HSB_OK) {
        err = store_conn_exec(c, "DELETE FROM dead_letters WHERE id = ?", &v, 1, NULL);
    }
    return err;
}

static void store_dlq_take_done(void *arg, hsb_err err)
{
    store_dlq_take_job *j = arg;
    j->done(j->arg, err, err == HSB_OK ? &j->rec : NULL);
    free(j->copy);
    free(j);
}

hsb_err store_dlq_take(store *st, uint64_t id, store_dlq_take_fn done, void *arg)
{
    if (done == NULL) {
        return HSB_EINVAL;
    }
    store_dlq_take_job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        return HSB_ENOMEM;
    }
    j->done = done;
    j->arg = arg;
    j->id = id;
    hsb_err err = store_pool_submit(st->pool, store_dlq_take_run, store_dlq_take_done, j, 0);
    if (err != HSB_OK) {
        free(j);
    }
    return err;
}
