/*
 * daemon/store/durable.c - durable message queue. See durable.h.
 */
#include "daemon/store/store_int.h"

#include <stdlib.h>
#include <string.h>

typedef enum store_durable_op {
    STORE_DURABLE_SAVE = 0,
    STORE_DURABLE_REMOVE,
    STORE_DURABLE_DELIVERIES,
} store_durable_op;

typedef struct store_durable_job {
    store_durable_op op;
    store_job_done_fn done;
    void *arg;
    uint64_t id;
    uint8_t lane;
    int64_t deadline;
    uint32_t deliveries;
    uint64_t enqueued_ms;
    size_t envelope_len;
    char *agent;    /* points into data[] */
    uint8_t data[]; /* envelope, then agent NUL-terminated */
} store_durable_job;

static hsb_err store_durable_run(store_conn *c, void *arg)
{
    store_durable_job *j = arg;

    switch (j->op) {
    case STORE_DURABLE_SAVE: {
        hsb_value v[7] = {
            {.type = HSB_VALUE_INT, .u.i = (int64_t)j->id},
            {.type = HSB_VALUE_TEXT, .u.s = {j->agent, strlen(j->agent)}},
            {.type = HSB_VALUE_INT, .u.i = j->lane},
            {.type = HSB_VALUE_INT, .u.i = j->deadline},
            {.type = HSB_VALUE_INT, .u.i = j->deliveries},
            {.type = HSB_VALUE_BLOB, .u.s = {j->data, j->envelope_len}},
            {.type = HSB_VALUE_INT, .u.i = (int64_t)j->enqueued_ms},
        };
        return store_conn_exec(c,
                               "INSERT OR REPLACE INTO durable(id, agent, lane, deadline, "
                               "deliveries, envelope, enqueued_ms) VALUES (?,?,?,?,?,?,?)",
                               v, 7, NULL);
    }
    case STORE_DURABLE_REMOVE: {
        hsb_value v = {.type = HSB_VALUE_INT, .u.i = (int64_t)j->id};
        return store_conn_exec(c, "DELETE FROM durable WHERE id = ?", &v, 1, NULL);
    }
    case STORE_DURABLE_DELIVERIES: {
        hsb_value v[2] = {
            {.type = HSB_VALUE_INT, .u.i = j->deliveries},
            {.type = HSB_VALUE_INT, .u.i = (int64_t)j->id},
        };
        return store_conn_exec(c, "UPDATE durable SET deliveries = ? WHERE id = ?", v, 2, NULL);
    }
    }
    return HSB_EINVAL;
}

static void store_durable_done(void *arg, hsb_err err)
{
    store_durable_job *j = arg;
    if (j->done != NULL) {
        j->done(j->arg, err);
    }
    free(j);
}

static hsb_err store_durable_submit(store *st, store_durable_job *j, unsigned flags,
                                    store_job_done_fn done, void *arg)
{
    j->done = done;
    j->arg = arg;
    hsb_err err = store_pool_submit(st->pool, store_durable_run, store_durable_done, j, flags);
    if (err != HSB_OK) {
        free(j);
    }
    return err;
}

hsb_err store_durable_save(store *st, const store_durable_rec *rec, unsigned flags,
                           store_job_done_fn done, void *arg)
{
    if (rec == NULL || rec->envelope == NULL) {
        return HSB_EINVAL;
    }
    const char *agent = rec->agent != NULL ? rec->agent : "";
    size_t al = strlen(agent);
    store_durable_job *j = malloc(sizeof(*j) + rec->envelope_len + al + 1);
    if (j == NULL) {
        return HSB_ENOMEM;
    }
    j->op = STORE_DURABLE_SAVE;
    j->id = rec->id;
    j->lane = rec->lane;
    j->deadline = rec->deadline;
    j->deliveries = rec->deliveries;
    j->enqueued_ms = rec->enqueued_ms;
    j->envelope_len = rec->envelope_len;
    memcpy(j->data, rec->envelope, rec->envelope_len);
    j->agent = (char *)j->data + rec->envelope_len;
    memcpy(j->agent, agent, al + 1);
    return store_durable_submit(st, j, flags, done, arg);
}

static hsb_err store_durable_small(store *st, store_durable_op op, uint64_t id, uint32_t deliveries,
                                   unsigned flags, store_job_done_fn done, void *arg)
{
    store_durable_job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        return HSB_ENOMEM;
    }
    j->op = op;
    j->id = id;
    j->deliveries = deliveries;
    return store_durable_submit(st, j, flags, done, arg);
}

hsb_err store_durable_remove(store *st, uint64_t id, unsigned flags, store_job_done_fn done,
                             void *arg)
{
    return store_durable_small(st, STORE_DURABLE_REMOVE, id, 0, flags, done, arg);
}

hsb_err store_durable_set_deliveries(store *st, uint64_t id, uint32_t deliveries, unsigned flags,
                                     store_job_done_fn done, void *arg)
{
    return store_durable_small(st, STORE_DURABLE_DELIVERIES, id, deliveries, flags, done, arg);
}

typedef struct store_durable_load_ctx {
    store_durable_fn fn;
    void *arg;
} store_durable_load_ctx;

static bool store_durable_load_row(void *arg, sqlite3_stmt *row)
{
    store_durable_load_ctx *ctx = arg;
    const char *agent = (const char *)sqlite3_column_text(row, 1);
    store_durable_rec rec = {
        .id = (uint64_t)sqlite3_column_int64(row, 0),
        .agent = agent != NULL ? agent : "",
        .lane = (uint8_t)sqlite3_column_int(row, 2),
        .deadline = sqlite3_column_int64(row, 3),
        .deliveries = (uint32_t)sqlite3_column_int64(row, 4),
        .envelope = sqlite3_column_blob(row, 5),
        .envelope_len = (size_t)sqlite3_column_bytes(row, 5),
        .enqueued_ms = (uint64_t)sqlite3_column_int64(row, 6),
    };
    return ctx->fn(ctx->arg, &rec);
}

hsb_err store_durable_load(store *st, store_durable_fn fn, void *arg)
{
    store_durable_load_ctx ctx = {fn, arg};
    return store_read(st,
                      "SELECT id, agent, lane, deadline, deliveries, envelope, enqueued_ms "
                      "FROM durable ORDER BY id",
                      NULL, 0, store_durable_load_row, &ctx);
}

static bool store_durable_u64_row(void *arg, sqlite3_stmt *row)
{
    *(uint64_t *)arg = (uint64_t)sqlite3_column_int64(row, 0);
    return false;
}

hsb_err store_durable_max_id(store *st, uint64_t *out)
{
    *out = 0;
    return store_read(st,
                      "SELECT max(coalesce((SELECT max(id) FROM durable), 0),"
                      "           coalesce((SELECT max(msg_id) FROM dead_letters), 0))",
                      NULL, 0, store_durable_u64_row, out);
}

hsb_err store_durable_count(store *st, uint64_t *out)
{
    *out = 0;
    return store_read(st, "SELECT count(*) FROM durable", NULL, 0, store_durable_u64_row, out);
}
