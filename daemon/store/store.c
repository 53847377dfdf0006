/*
 * daemon/store/store.c - store lifecycle: open the pool, the query cache, the audit chain head,
 * and wire the writer's hooks (cache invalidation around COMMIT, audit head bookkeeping).
 */
#include "daemon/store/store_int.h"

#include <stdlib.h>
#include <string.h>

void store_config_defaults(store_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->path = "var/hsbus.db";
    cfg->sync = STORE_SYNC_FULL;
    cfg->readers = 2;
    cfg->busy_timeout_ms = 5000;
    cfg->checkout_timeout_ms = 1000;
    cfg->queue_max = 65536;
    cfg->group_max = 4096;
    cfg->cache_max_bytes = 16u << 20;
    cfg->cache_ttl_ms = 300000;
}

uint64_t store_now_wall(store *st)
{
    return st->cfg.wall_ms != NULL ? st->cfg.wall_ms(st->cfg.wall_arg) : store_wall_ms();
}

static void store_hook_before_commit(void *arg, const char *const *tables, size_t n, bool all)
{
    store *st = arg;
    store_qcache_write_begin(st->qc, tables, n, all);
}

static void store_hook_after_group(void *arg, bool committed, const char *const *tables, size_t n,
                                   bool all)
{
    store *st = arg;
    if (n > 0 || all) {
        store_qcache_write_end(st->qc, tables, n, all);
    }
    store_audit_after_group(st, committed);
}

/* The audit chain's pending head advanced with the rolled-back appends: back to the committed one.
 */
static void store_hook_before_replay(void *arg)
{
    store_audit_after_group(arg, false);
}

hsb_err store_open(const store_config *cfg, store **out)
{
    store_config defaults;
    store *st;
    hsb_err err;

    if (cfg == NULL) {
        store_config_defaults(&defaults);
        cfg = &defaults;
    }
    if (cfg->path == NULL || cfg->path[0] == '\0' ||
        (cfg->sync != STORE_SYNC_FULL && cfg->sync != STORE_SYNC_NORMAL)) {
        return HSB_EINVAL;
    }
    st = calloc(1, sizeof(*st));
    if (st == NULL) {
        return HSB_ENOMEM;
    }
    st->cfg = *cfg;
    if (st->cfg.checkout_timeout_ms == 0) {
        st->cfg.checkout_timeout_ms = 1000;
    }
    st->path = strdup(cfg->path);
    if (st->path == NULL) {
        err = HSB_ENOMEM;
        goto fail_st;
    }
    st->cfg.path = st->path;

    store_pool_config pc = {
        .path = st->path,
        .sync_full = cfg->sync == STORE_SYNC_FULL,
        .readers = cfg->readers,
        .busy_timeout_ms = cfg->busy_timeout_ms,
        .queue_max = cfg->queue_max,
        .group_max = cfg->group_max,
    };
    err = store_pool_open(&pc, &st->pool);
    if (err != HSB_OK) {
        goto fail_path;
    }
    store_qcache_config qcc = {
        .max_bytes = cfg->cache_max_bytes,
        .default_ttl_ms = cfg->cache_ttl_ms,
        .clock_ms = cfg->clock_ms,
        .clock_arg = cfg->clock_arg,
    };
    err = store_qcache_new(&qcc, &st->qc);
    if (err != HSB_OK) {
        goto fail_pool;
    }
    err = store_audit_load_head(st);
    if (err != HSB_OK) {
        goto fail_qc;
    }
    store_pool_hooks hooks = {
        .before_commit = store_hook_before_commit,
        .after_group = store_hook_after_group,
        .before_replay = store_hook_before_replay,
        .arg = st,
    };
    store_pool_set_hooks(st->pool, &hooks);
    err = store_pool_start(st->pool);
    if (err != HSB_OK) {
        goto fail_qc;
    }
    *out = st;
    return HSB_OK;

fail_qc:
    store_qcache_free(st->qc);
fail_pool:
    store_pool_close(st->pool);
fail_path:
    free(st->path);
fail_st:
    free(st);
    return err;
}

hsb_err store_close(store *st)
{
    hsb_err err;

    if (st == NULL) {
        return HSB_OK;
    }
    err = store_pool_close(st->pool);
    store_qcache_free(st->qc);
    free(st->path);
    free(st);
    return err;
}

hsb_err store_sync(store *st)
{
    return store_pool_sync(st->pool);
}

void store_stats_get(store *st, store_stats *out)
{
    memset(out, 0, sizeof(*out));
    store_pool_stats_get(st->pool, &out->pool);
    store_qcache_stats_get(st->qc, &out->cache);
    out->audit_seq = __atomic_load_n(&st->audit_committed_seq_shared, __ATOMIC_RELAXED);
}

store_pool *store_pool_of(store *st)
{
    return st->pool;
}

store_qcache *store_qcache_of(store *st)
{
    return st->qc;
}

void store_cache_flush(store *st)
{
    store_qcache_flush(st->qc);
}

void store_cache_invalidate(store *st, const char *table)
{
    store_qcache_invalidate(st->qc, table);
}

hsb_err store_read(store *st, const char *sql, const hsb_value *params, size_t n,
                   bool (*fn)(void *arg, sqlite3_stmt *row), void *arg)
{
    store_conn *c;
    store_stmt *s;
    hsb_err err;
    int rc;

    err = store_pool_checkout(st->pool, st->cfg.checkout_timeout_ms, &c);
    if (err != HSB_OK) {
        return err;
    }
    err = store_conn_stmt(c, sql, &s);
    if (err != HSB_OK) {
        goto checkin;
    }
    err = store_stmt_bind(s, params, n);
    if (err != HSB_OK) {
        goto put;
    }
    while ((rc = sqlite3_step(s->stmt)) == SQLITE_ROW) {
        if (!fn(arg, s->stmt)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    if (rc != SQLITE_DONE) {
        err = HSB_EIO;
    }
put:
    store_conn_put(c, s);
checkin:
    store_pool_checkin(st->pool, c);
    return err;
}
