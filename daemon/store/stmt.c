/*
 * daemon/store/stmt.c - per-connection prepared-statement cache with table sets from the
 * authorizer. See stmt.h.
 */
#include "daemon/store/stmt.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define STORE_STMT_BUCKETS_MIN 64

struct store_stmt_cache {
    sqlite3 *db;
    store_stmt **buckets;
    size_t n_buckets;
    size_t count;
    store_stmt *collecting; /* the entry being prepared, or NULL */
    bool collect_oom;
    uint64_t prepares;
    uint64_t hits;
    uint64_t trimmed;
    uint64_t tick;
};

uint64_t store_hash64(uint64_t h, const void *p, size_t len)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < len; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

hsb_err store_err_from_sqlite(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return HSB_OK;
    case SQLITE_NOMEM:
        return HSB_ENOMEM;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return HSB_EBUSY;
    default:
        return HSB_EIO;
    }
}

static bool store_stmt_set_add(char ***v, size_t *n, const char *name)
{
    for (size_t i = 0; i < *n; i++) {
        if (strcmp((*v)[i], name) == 0) {
            return true;
        }
    }
    char **nv = realloc(*v, (*n + 1) * sizeof(*nv));
    if (nv == NULL) {
        return false;
    }
    *v = nv;
    nv[*n] = strdup(name);
    if (nv[*n] == NULL) {
        return false;
    }
    (*n)++;
    return true;
}

static int store_stmt_authorize(void *ud, int action, const char *a1, const char *a2,
                                const char *dbname, const char *trigger)
{
    store_stmt_cache *c = ud;
    store_stmt *s = c->collecting;
    const char *table = NULL;
    bool write = false;

    (void)dbname;
    (void)trigger;
    if (s == NULL) {
        return SQLITE_OK; /* a re-prepare inside sqlite3_step, or BEGIN/COMMIT */
    }
    switch (action) {
    case SQLITE_READ:
        table = a1;
        break;
    case SQLITE_INSERT:
    case SQLITE_UPDATE:
    case SQLITE_DELETE:
        table = a1;
        write = true;
        break;
    case SQLITE_CREATE_TABLE:
    case SQLITE_CREATE_TEMP_TABLE:
    case SQLITE_DROP_TABLE:
    case SQLITE_DROP_TEMP_TABLE:
    case SQLITE_CREATE_VIEW:
    case SQLITE_CREATE_TEMP_VIEW:
    case SQLITE_DROP_VIEW:
    case SQLITE_DROP_TEMP_VIEW:
        table = a1;
        write = true;
        s->ddl = true;
        break;
    case SQLITE_CREATE_INDEX:
    case SQLITE_CREATE_TEMP_INDEX:
    case SQLITE_DROP_INDEX:
    case SQLITE_DROP_TEMP_INDEX:
    case SQLITE_CREATE_TRIGGER:
    case SQLITE_CREATE_TEMP_TRIGGER:
    case SQLITE_DROP_TRIGGER:
    case SQLITE_DROP_TEMP_TRIGGER:
    case SQLITE_ALTER_TABLE:
        table = a2;
        write = true;
        s->ddl = true;
        break;
    case SQLITE_TRANSACTION:
    case SQLITE_SAVEPOINT:
        s->txn = true;
        break;
    case SQLITE_PRAGMA:
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
        s->unsafe = true;
        break;
    default:
        break;
    }
    if (table != NULL && table[0] != '\0') {
        bool ok = write ? store_stmt_set_add(&s->writes, &s->n_writes, table)
                        : store_stmt_set_add(&s->reads, &s->n_reads, table);
        if (!ok) {
            c->collect_oom = true;
        }
    }
    return SQLITE_OK;
}

hsb_err store_stmt_cache_new(sqlite3 *db, store_stmt_cache **out)
{
    store_stmt_cache *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return HSB_ENOMEM;
    }
    c->buckets = calloc(STORE_STMT_BUCKETS_MIN, sizeof(*c->buckets));
    if (c->buckets == NULL) {
        free(c);
        return HSB_ENOMEM;
    }
    c->n_buckets = STORE_STMT_BUCKETS_MIN;
    c->db = db;
    sqlite3_set_authorizer(db, store_stmt_authorize, c);
    *out = c;
    return HSB_OK;
}

static void store_stmt_entry_free(store_stmt *s)
{
    if (s == NULL) {
        return;
    }
    sqlite3_finalize(s->stmt);
    for (size_t i = 0; i < s->n_reads; i++) {
        free(s->reads[i]);
    }
    for (size_t i = 0; i < s->n_writes; i++) {
        free(s->writes[i]);
    }
    free(s->reads);
    free(s->writes);
    free(s->sql);
    free(s);
}

void store_stmt_cache_free(store_stmt_cache *c)
{
    if (c == NULL) {
        return;
    }
    for (size_t b = 0; b < c->n_buckets; b++) {
        store_stmt *s = c->buckets[b];
        while (s != NULL) {
            store_stmt *next = s->next;
            store_stmt_entry_free(s);
            s = next;
        }
    }
    sqlite3_set_authorizer(c->db, NULL, NULL);
    free(c->buckets);
    free(c);
}

static void store_stmt_grow(store_stmt_cache *c)
{
    size_t nb = c->n_buckets * 2;
    store_stmt **buckets = calloc(nb, sizeof(*buckets));
    if (buckets == NULL) {
        return; /* keep the longer chains */
    }
    for (size_t b = 0; b < c->n_buckets; b++) {
        store_stmt *s = c->buckets[b];
        while (s != NULL) {
            store_stmt *next = s->next;
            s->next = buckets[s->hash & (nb - 1)];
            buckets[s->hash & (nb - 1)] = s;
            s = next;
        }
    }
    free(c->buckets);
    c->buckets = buckets;
    c->n_buckets = nb;
}

static bool store_stmt_only_space(const char *p)
{
    for (; *p != '\0'; p++) {
        if (!isspace((unsigned char)*p) && *p != ';') {
            return false;
        }
    }
    return true;
}

hsb_err store_stmt_get(store_stmt_cache *c, const char *sql, store_stmt **out)
{
    size_t len = strlen(sql);
    uint64_t h = store_hash64(STORE_HASH64_INIT, sql, len);
    store_stmt *s;
    hsb_err err;

    for (s = c->buckets[h & (c->n_buckets - 1)]; s != NULL; s = s->next) {
        if (s->hash == h && s->sql_len == len && memcmp(s->sql, sql, len) == 0) {
            if (s->in_use) {
                return HSB_EINVAL;
            }
            s->in_use = true;
            s->last_use = ++c->tick;
            c->hits++;
            *out = s;
            return HSB_OK;
        }
    }

    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return HSB_ENOMEM;
    }
    s->sql = malloc(len + 1);
    if (s->sql == NULL) {
        err = HSB_ENOMEM;
        goto fail;
    }
    memcpy(s->sql, sql, len + 1);
    s->sql_len = len;
    s->hash = h;

    const char *tail = NULL;
    c->collecting = s;
    c->collect_oom = false;
    int rc =
        sqlite3_prepare_v3(c->db, sql, (int)len + 1, SQLITE_PREPARE_PERSISTENT, &s->stmt, &tail);
    c->collecting = NULL;
    if (rc != SQLITE_OK) {
        err = store_err_from_sqlite(rc);
        goto fail;
    }
    if (s->stmt == NULL || (tail != NULL && !store_stmt_only_space(tail))) {
        err = HSB_EINVAL;
        goto fail;
    }
    if (c->collect_oom) {
        err = HSB_ENOMEM;
        goto fail;
    }
    c->prepares++;
    s->next = c->buckets[h & (c->n_buckets - 1)];
    c->buckets[h & (c->n_buckets - 1)] = s;
    c->count++;
    if (c->count > c->n_buckets) {
        store_stmt_grow(c);
    }
    s->in_use = true;
    s->last_use = ++c->tick;
    *out = s;
    return HSB_OK;

fail:
    store_stmt_entry_free(s);
    return err;
}

void store_stmt_put(store_stmt_cache *c, store_stmt *s)
{
    (void)c;
    sqlite3_reset(s->stmt);
    sqlite3_clear_bindings(s->stmt);
    s->in_use = false;
}

static int store_stmt_cmp_use(const void *a, const void *b)
{
    const store_stmt *x = *(store_stmt *const *)a, *y = *(store_stmt *const *)b;
    return x->last_use < y->last_use ? -1 : x->last_use > y->last_use;
}

void store_stmt_cache_trim(store_stmt_cache *c, size_t max)
{
    store_stmt **all;
    size_t n = 0;

    if (c->count <= max) {
        return;
    }
    all = malloc(c->count * sizeof(*all));
    if (all == NULL) {
        return;
    }
    for (size_t b = 0; b < c->n_buckets; b++) {
        for (store_stmt *s = c->buckets[b]; s != NULL; s = s->next) {
            if (!s->in_use) {
                all[n++] = s;
            }
        }
    }
    qsort(all, n, sizeof(*all), store_stmt_cmp_use);
    for (size_t i = 0; i < n && c->count > max / 2; i++) {
        store_stmt **pp = &c->buckets[all[i]->hash & (c->n_buckets - 1)];
        while (*pp != all[i]) {
            pp = &(*pp)->next;
        }
        *pp = all[i]->next;
        store_stmt_entry_free(all[i]);
        c->count--;
        c->trimmed++;
    }
    free(all);
}

void store_stmt_stats_get(const store_stmt_cache *c, store_stmt_stats *st)
{
    st->prepares = c->prepares;
    st->hits = c->hits;
    st->trimmed = c->trimmed;
    st->entries = c->count;
}

hsb_err store_stmt_bind(store_stmt *s, const hsb_value *params, size_t n)
{
    if ((size_t)sqlite3_bind_parameter_count(s->stmt) != n) {
        return HSB_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        int rc;
        int idx = (int)i + 1;
        const hsb_value *v = &params[i];
        switch (v->type) {
        case HSB_VALUE_NULL:
            rc = sqlite3_bind_null(s->stmt, idx);
            break;
        case HSB_VALUE_INT:
            rc = sqlite3_bind_int64(s->stmt, idx, v->u.i);
            break;
        case HSB_VALUE_REAL:
            rc = sqlite3_bind_double(s->stmt, idx, v->u.d);
            break;
        case HSB_VALUE_TEXT:
            rc = sqlite3_bind_text64(s->stmt, idx, v->u.s.p ? v->u.s.p : "", v->u.s.n,
                                     SQLITE_STATIC, SQLITE_UTF8);
            break;
        case HSB_VALUE_BLOB:
            rc = sqlite3_bind_blob64(s->stmt, idx, v->u.s.p ? v->u.s.p : "", v->u.s.n,
                                     SQLITE_STATIC);
            break;
        default:
            return HSB_EINVAL;
        }
        if (rc != SQLITE_OK) {
            return store_err_from_sqlite(rc);
        }
    }
    return HSB_OK;
}

void store_stmt_columns(sqlite3_stmt *stmt, hsb_value *cols, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int ci = (int)i;
        hsb_value *v = &cols[i];
        switch (sqlite3_column_type(stmt, ci)) {
        case SQLITE_INTEGER:
            v->type = HSB_VALUE_INT;
            v->u.i = sqlite3_column_int64(stmt, ci);
            break;
        case SQLITE_FLOAT:
            v->type = HSB_VALUE_REAL;
            v->u.d = sqlite3_column_double(stmt, ci);
            break;
        case SQLITE_TEXT:
            v->type = HSB_VALUE_TEXT;
            v->u.s.p = sqlite3_column_text(stmt, ci);
            v->u.s.n = (size_t)sqlite3_column_bytes(stmt, ci);
            break;
        case SQLITE_BLOB:
            v->type = HSB_VALUE_BLOB;
            v->u.s.p = sqlite3_column_blob(stmt, ci);
            v->u.s.n = (size_t)sqlite3_column_bytes(stmt, ci);
            break;
        default:
            v->type = HSB_VALUE_NULL;
            break;
        }
    }
}
