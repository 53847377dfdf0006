/*
 * daemon/store/persist.c - bus_persist_ops adapter. See persist.h.
 */
#include "daemon/store/store_int.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "proto/codec.h"

struct store_persist {
    store *st;
    store_persist_post_fn post;
    void *post_arg;
    uint64_t errors; /* atomic */
};

typedef struct store_persist_save {
    store_persist *p;
    uint64_t token;
} store_persist_save;

hsb_err store_persist_new(store *st, store_persist_post_fn post_done, void *post_arg,
                          store_persist **out)
{
    if (st == NULL || post_done == NULL) {
        return HSB_EINVAL;
    }
    store_persist *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return HSB_ENOMEM;
    }
    p->st = st;
    p->post = post_done;
    p->post_arg = post_arg;
    *out = p;
    return HSB_OK;
}

void store_persist_free(store_persist *p)
{
    free(p);
}

uint64_t store_persist_errors(const store_persist *p)
{
    return __atomic_load_n(&p->errors, __ATOMIC_RELAXED);
}

static void store_persist_count(store_persist *p, hsb_err err)
{
    if (err != HSB_OK) {
        __atomic_add_fetch(&p->errors, 1, __ATOMIC_RELAXED);
    }
}

static void store_persist_bg_done(void *arg, hsb_err err)
{
    store_persist_count(arg, err);
}

static hsb_err store_persist_encode(const bus_msg *m, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    hsb_err err = hsb_enc_envelope(&pk, &m->env);
    if (err != HSB_OK) {
        msgpack_sbuffer_destroy(sb);
    }
    return err;
}

static void store_persist_save_done(void *arg, hsb_err err)
{
    store_persist_save *s = arg;
    s->p->post(s->p->post_arg, s->token, err);
    free(s);
}

static hsb_err store_persist_op_save(void *ctx, const bus_msg *m, uint64_t token)
{
    store_persist *p = ctx;
    msgpack_sbuffer sb;
    store_persist_save *s = malloc(sizeof(*s));
    hsb_err err;

    if (s == NULL) {
        return HSB_ENOMEM;
    }
    s->p = p;
    s->token = token;
    err = store_persist_encode(m, &sb);
    if (err != HSB_OK) {
        free(s);
        return err;
    }
    store_durable_rec rec = {
        .id = m->env.id,
        .agent = m->env.to,
        .lane = m->env.prio,
        .deadline = m->env.deadline,
        .deliveries = m->env.deliveries,
        .envelope = sb.data,
        .envelope_len = sb.size,
        .enqueued_ms = m->enqueue_ms,
    };
    err = store_durable_save(p->st, &rec, 0, store_persist_save_done, s);
    msgpack_sbuffer_destroy(&sb);
    if (err != HSB_OK) {
        free(s);
    }
    return err;
}

static void store_persist_op_remove(void *ctx, uint64_t id)
{
    store_persist *p = ctx;
    hsb_err err = store_durable_remove(p->st, id, STORE_JOB_FORCE, store_persist_bg_done, p);
    store_persist_count(p, err);
}

static void store_persist_op_delivered(void *ctx, uint64_t id, uint32_t deliveries)
{
    store_persist *p = ctx;
    hsb_err err = store_durable_set_deliveries(p->st, id, deliveries, STORE_JOB_FORCE,
                                               store_persist_bg_done, p);
    store_persist_count(p, err);
}

static void store_persist_op_dead_letter(void *ctx, const bus_msg *m, const char *agent,
                                         uint32_t deliveries, const char *reason)
{
    store_persist *p = ctx;
    msgpack_sbuffer sb;
    hsb_err err = store_persist_encode(m, &sb);
    if (err != HSB_OK) {
        store_persist_count(p, err);
        return;
    }
    store_dlq_rec rec = {
        .msg_id = m->env.id,
        .agent = agent,
        .reason = reason,
        .deliveries = deliveries,
        .envelope = sb.data,
        .envelope_len = sb.size,
    };
    err = store_dlq_add(p->st, &rec, STORE_JOB_FORCE, store_persist_bg_done, p);
    msgpack_sbuffer_destroy(&sb);
    store_persist_count(p, err);
}

static void store_persist_op_audit(void *ctx, const char *event, const char *detail)
{
    store_persist *p = ctx;
    hsb_err err =
        store_audit_append(p->st, event, detail, STORE_JOB_FORCE, store_persist_bg_done, p);
    store_persist_count(p, err);
}

static const bus_persist_ops store_persist_ops_table = {
    .save = store_persist_op_save,
    .remove = store_persist_op_remove,
    .delivered = store_persist_op_delivered,
    .dead_letter = store_persist_op_dead_letter,
    .audit = store_persist_op_audit,
};

const bus_persist_ops *store_persist_ops(void)
{
    return &store_persist_ops_table;
}

typedef struct store_persist_load_ctx {
    hsb_dec dec;
    store_persist_restore_fn fn;
    void *arg;
    uint64_t bad;
} store_persist_load_ctx;

static bool store_persist_load_row(void *arg, const store_durable_rec *rec)
{
    store_persist_load_ctx *ctx = arg;
    hsb_envelope env;

    hsb_dec_reset(&ctx->dec);
    if (hsb_dec_envelope(&ctx->dec, rec->envelope, rec->envelope_len, &env) != HSB_OK) {
        ctx->bad++;
        return true;
    }
    env.id = rec->id;
    env.deliveries = rec->deliveries;
    return ctx->fn(ctx->arg, &env);
}

hsb_err store_persist_load(store *st, store_persist_restore_fn fn, void *arg, uint64_t *bad)
{
    store_persist_load_ctx ctx = {.fn = fn, .arg = arg};
    hsb_err err = hsb_dec_init(&ctx.dec);
    if (err != HSB_OK) {
        return err;
    }
    err = store_durable_load(st, store_persist_load_row, &ctx);
    hsb_dec_fini(&ctx.dec);
    if (bad != NULL) {
        *bad = ctx.bad;
    }
    return err;
}
