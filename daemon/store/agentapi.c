/*
 * daemon/store/agentapi.c - cached queries and write jobs for the daemon and agents.
 * See agentapi.h.
 */
#include "daemon/store/store_int.h"

#include <stdlib.h>
#include <string.h>

bool store_agent_table_allowed(const char *table, bool write)
{
    if (strcmp(table, "kv") == 0 || strncmp(table, "agent_", 6) == 0) {
        return true;
    }
    return !write && strcmp(table, "audit") == 0;
}

/* A schema change reads and writes SQLite's own catalog (sqlite_master): that is allowed when every
 * table it creates, alters or drops is the agent's. */
static bool store_agent_catalog(const store_stmt *s, const char *table)
{
    return s->ddl && strncmp(table, "sqlite_", 7) == 0;
}

static hsb_err store_agent_check(const store_stmt *s)
{
    if (s->unsafe || s->txn) {
        return HSB_EDENIED;
    }
    for (size_t i = 0; i < s->n_reads; i++) {
        if (!store_agent_table_allowed(s->reads[i], false) &&
            !store_agent_catalog(s, s->reads[i])) {
            return HSB_EDENIED;
        }
    }
    for (size_t i = 0; i < s->n_writes; i++) {
        if (!store_agent_table_allowed(s->writes[i], true) &&
            !store_agent_catalog(s, s->writes[i])) {
            return HSB_EDENIED;
        }
    }
    return HSB_OK;
}

/* ---- reads ------------------------------------------------------------------------------ */

hsb_err store_query(store *st, const char *sql, const hsb_value *params, size_t n, uint32_t ttl_ms,
                    unsigned flags, hsb_row_fn row, void *arg)
{
    bool use_cache = !(flags & STORE_QUERY_NOCACHE);
    store_qkey key = {0};
    store_qsnap snap = {0};
    store_qresult res;
    store_qentry *e;
    store_conn *c;
    store_stmt *s;
    hsb_value stack_cols[16];
    hsb_value *cols = stack_cols;
    bool stopped = false;
    hsb_err err;
    int rc;

    if (sql == NULL || row == NULL || (n > 0 && params == NULL)) {
        return HSB_EINVAL;
    }
    store_qresult_init(&res, st->cfg.cache_max_bytes ? st->cfg.cache_max_bytes / 8 : 2u << 20);
    if (use_cache) {
        /* Agents have their own key space: their entries passed the policy check. */
        err = store_qkey_init_scoped(&key, (flags & STORE_QUERY_AGENT) ? 1 : 0, sql, params, n);
        if (err != HSB_OK) {
            return err;
        }
        if (store_qcache_lookup(st->qc, &key, &e) == HSB_OK) {
            err = store_qcache_replay(e, row, arg);
            store_qcache_release(st->qc, e);
            store_qkey_fini(&key);
            return err;
        }
    }
    err = store_pool_checkout(st->pool, st->cfg.checkout_timeout_ms, &c);
    if (err != HSB_OK) {
        goto out_key;
    }
    err = store_conn_stmt(c, sql, &s);
    if (err != HSB_OK) {
        goto out_checkin;
    }
    if (!sqlite3_stmt_readonly(s->stmt)) {
        err = HSB_EINVAL;
        goto out_put;
    }
    if ((flags & STORE_QUERY_AGENT) && (err = store_agent_check(s)) != HSB_OK) {
        goto out_put;
    }
    if (use_cache) {
        /* Before the first step: the read snapshot starts after these generations. */
        err = store_qcache_snapshot(st->qc, (const char *const *)s->reads, s->n_reads, &snap);
        if (err != HSB_OK) {
            goto out_put;
        }
    }
    err = store_stmt_bind(s, params, n);
    if (err != HSB_OK) {
        goto out_put;
    }
    size_t n_cols = (size_t)sqlite3_column_count(s->stmt);
    if (n_cols > 16) {
        cols = malloc(n_cols * sizeof(*cols));
        if (cols == NULL) {
            err = HSB_ENOMEM;
            goto out_put;
        }
    }
    while ((rc = sqlite3_step(s->stmt)) == SQLITE_ROW) {
        store_stmt_columns(s->stmt, cols, n_cols);
        if (use_cache) {
            store_qresult_add(&res, cols, n_cols);
        }
        if (!row(arg, cols, n_cols)) {
            stopped = true;
            break;
        }
    }
    if (!stopped && rc != SQLITE_DONE) {
        err = HSB_EIO;
    }
out_put:
    store_conn_put(c, s);
out_checkin:
    store_pool_checkin(st->pool, c);
    if (err == HSB_OK && use_cache && !stopped) {
        store_qcache_insert(st->qc, &key, &snap, &res, ttl_ms);
    }
out_key:
    if (cols != stack_cols) {
        free(cols);
    }
    store_qresult_fini(&res);
    store_qcache_snap_fini(&snap);
    store_qkey_fini(&key);
    return err == HSB_EBUSY ? HSB_EIO : err; /* a locked schema after busy_timeout */
}

hsb_err store_agent_query(store *st, const char *sql, const hsb_value *params, size_t n,
                          uint32_t ttl_ms, hsb_row_fn row, void *arg)
{
    return store_query(st, sql, params, n, ttl_ms, STORE_QUERY_AGENT, row, arg);
}

/* ---- writes ----------------------------------------------------------------------------- */

typedef struct store_write_job {
    hsb_done_fn done;
    void *arg;
    unsigned flags;
    size_t n;
    hsb_stmt *stmts; /* everything below points into the same allocation */
} store_write_job;

static hsb_err store_write_run(store_conn *c, void *arg)
{
    store_write_job *j = arg;

    for (size_t i = 0; i < j->n; i++) {
        const hsb_stmt *hs = &j->stmts[i];
        store_stmt *s;
        hsb_err err = store_conn_stmt(c, hs->sql, &s);
        int rc;

        if (err != HSB_OK) {
            return err == HSB_EBUSY ? HSB_EIO : err;
        }
        if (s->txn) {
            err = HSB_EINVAL;
        } else if (j->flags & STORE_QUERY_AGENT) {
            err = store_agent_check(s);
        }
        if (err == HSB_OK) {
            err = store_stmt_bind(s, hs->params, hs->n_params);
        }
        if (err == HSB_OK) {
            while ((rc = sqlite3_step(s->stmt)) == SQLITE_ROW) {
            }
            if (rc != SQLITE_DONE) {
                err = HSB_EIO;
            }
        }
        store_conn_put(c, s);
        if (err != HSB_OK) {
            return err;
        }
    }
    return HSB_OK;
}

static void store_write_done(void *arg, hsb_err err)
{
    store_write_job *j = arg;
    if (j->done != NULL) {
        j->done(j->arg, err);
    }
    free(j);
}

static size_t store_align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

hsb_err store_write(store *st, const hsb_stmt *stmts, size_t n, unsigned flags, hsb_done_fn done,
                    void *arg)
{
    size_t size;
    store_write_job *j;
    uint8_t *p;

    if (stmts == NULL || n == 0) {
        return HSB_EINVAL;
    }
    size = store_align8(sizeof(*j)) + store_align8(n * sizeof(hsb_stmt));
    for (size_t i = 0; i < n; i++) {
        if (stmts[i].sql == NULL || (stmts[i].n_params > 0 && stmts[i].params == NULL)) {
            return HSB_EINVAL;
        }
        size += store_align8(stmts[i].n_params * sizeof(hsb_value));
        size += strlen(stmts[i].sql) + 1;
        for (size_t k = 0; k < stmts[i].n_params; k++) {
            const hsb_value *v = &stmts[i].params[k];
            if (v->type == HSB_VALUE_TEXT || v->type == HSB_VALUE_BLOB) {
                size += v->u.s.n + 1;
            }
        }
    }
    j = malloc(size);
    if (j == NULL) {
        return HSB_ENOMEM;
    }
    p = (uint8_t *)j + store_align8(sizeof(*j));
    j->done = done;
    j->arg = arg;
    j->flags = flags;
    j->n = n;
    j->stmts = (hsb_stmt *)p;
    p += store_align8(n * sizeof(hsb_stmt));
    for (size_t i = 0; i < n; i++) {
        hsb_value *vals = (hsb_value *)p;
        p += store_align8(stmts[i].n_params * sizeof(hsb_value));
        j->stmts[i].params = vals;
        j->stmts[i].n_params = stmts[i].n_params;
        if (stmts[i].n_params > 0) {
            memcpy(vals, stmts[i].params, stmts[i].n_params * sizeof(hsb_value));
        }
    }
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(stmts[i].sql);
        memcpy(p, stmts[i].sql, len + 1);
        j->stmts[i].sql = (const char *)p;
        p += len + 1;
        hsb_value *vals = (hsb_value *)j->stmts[i].params;
        for (size_t k = 0; k < stmts[i].n_params; k++) {
            hsb_value *v = &vals[k];
            if (v->type == HSB_VALUE_TEXT || v->type == HSB_VALUE_BLOB) {
                if (v->u.s.n > 0) {
                    memcpy(p, v->u.s.p, v->u.s.n);
                }
                p[v->u.s.n] = '\0';
                v->u.s.p = p;
                p += v->u.s.n + 1;
            }
        }
    }
    hsb_err err = store_pool_submit(st->pool, store_write_run, store_write_done, j, 0);
    if (err != HSB_OK) {
        free(j);
    }
    return err;
}

hsb_err store_agent_write(store *st, const hsb_stmt *stmt, hsb_done_fn done, void *arg)
{
    return store_write(st, stmt, 1, STORE_QUERY_AGENT, done, arg);
}

hsb_err store_agent_txn(store *st, const hsb_stmt *stmts, size_t n, hsb_done_fn done, void *arg)
{
    return store_write(st, stmts, n, STORE_QUERY_AGENT, done, arg);
}

hsb_err store_agent_audit(store *st, const char *event, const char *detail)
{
    return store_audit_append(st, event, detail, 0, NULL, NULL);
}
