/*
 * daemon/store/qcache.c - query cache with per-table generations. See qcache.h.
 *
 * Design note. Three structures share one mutex: a hash map of entries (by key hash, chained), an
 * LRU list of entries (head = most recent), and a map of tables (by name). Each table keeps a list
 * of tags, one per entry that read it, so that invalidating a table touches only its entries. An
 * entry has one reference for being in the cache plus one per reader replaying it; it is freed when
 * the last goes, so eviction never pulls memory from under a replay.
 */
#include "daemon/store/qcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/store/stmt.h"

#define STORE_QCACHE_TABLE_BUCKETS 256
#define STORE_QCACHE_BUCKETS_MIN   1024

typedef struct store_qtag {
    struct store_qtable *t;
    struct store_qentry *e;
    struct store_qtag *prev, *next;
} store_qtag;

typedef struct store_qtable {
    struct store_qtable *next;
    uint64_t gen;
    unsigned writing;
    store_qtag *tags;
    char name[];
} store_qtable;

struct store_qentry {
    store_qentry *hnext;
    store_qentry *lru_prev, *lru_next;
    uint64_t hash;
    uint8_t *key;
    size_t key_len;
    uint8_t *res;
    size_t res_len;
    size_t rows;
    size_t max_cols;
    uint64_t expires_ms;
    size_t bytes;
    unsigned refs; /* atomic: 1 while in the cache + 1 per holder; increments under qc->mu */
    bool linked;
    size_t n_tags;
    store_qtag tags[];
};

struct store_qcache {
    store_qcache_config cfg;
    pthread_mutex_t mu;
    store_qentry **buckets;
    size_t n_buckets;
    store_qentry *lru_head, *lru_tail;
    store_qtable *tables[STORE_QCACHE_TABLE_BUCKETS];
    uint64_t global_gen;
    unsigned global_writing;
    store_qcache_stats st;
};

static uint64_t store_qcache_mono_ms(void *arg)
{
    struct timespec ts;
    (void)arg;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000ull + (uint64_t)ts.tv_nsec / 1000000ull;
}

hsb_err store_qcache_new(const store_qcache_config *cfg, store_qcache **out)
{
    store_qcache *qc = calloc(1, sizeof(*qc));
    if (qc == NULL) {
        return HSB_ENOMEM;
    }
    if (cfg != NULL) {
        qc->cfg = *cfg;
    }
    if (qc->cfg.max_bytes == 0) {
        qc->cfg.max_bytes = 16u << 20;
    }
    if (qc->cfg.default_ttl_ms == 0) {
        qc->cfg.default_ttl_ms = 300000;
    }
    if (qc->cfg.clock_ms == NULL) {
        qc->cfg.clock_ms = store_qcache_mono_ms;
    }
    qc->buckets = calloc(STORE_QCACHE_BUCKETS_MIN, sizeof(*qc->buckets));
    if (qc->buckets == NULL) {
        free(qc);
        return HSB_ENOMEM;
    }
    qc->n_buckets = STORE_QCACHE_BUCKETS_MIN;
    qc->st.max_bytes = qc->cfg.max_bytes;
    pthread_mutex_init(&qc->mu, NULL);
    *out = qc;
    return HSB_OK;
}

static void store_qentry_free(store_qentry *e)
{
    free(e->key);
    free(e->res);
    free(e);
}

/* Unlinks e from the hash map, the LRU list and its tables; drops the cache's reference.
 * Returns e when the caller must free it (after unlocking), NULL otherwise. */
static store_qentry *store_qcache_unlink_locked(store_qcache *qc, store_qentry *e)
{
    store_qentry **pp = &qc->buckets[e->hash & (qc->n_buckets - 1)];
    while (*pp != e) {
        pp = &(*pp)->hnext;
    }
    *pp = e->hnext;
    if (e->lru_prev != NULL) {
        e->lru_prev->lru_next = e->lru_next;
    } else {
        qc->lru_head = e->lru_next;
    }
    if (e->lru_next != NULL) {
        e->lru_next->lru_prev = e->lru_prev;
    } else {
        qc->lru_tail = e->lru_prev;
    }
    for (size_t i = 0; i < e->n_tags; i++) {
        store_qtag *tg = &e->tags[i];
        if (tg->prev != NULL) {
            tg->prev->next = tg->next;
        } else {
            tg->t->tags = tg->next;
        }
        if (tg->next != NULL) {
            tg->next->prev = tg->prev;
        }
    }
    e->linked = false;
    qc->st.bytes -= e->bytes;
    qc->st.entries--;
    return __atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL) == 0 ? e : NULL;
}

/* Frees a list of unlinked entries chained through hnext (after the lock is released). */
static void store_qcache_free_list(store_qentry *dead)
{
    while (dead != NULL) {
        store_qentry *next = dead->hnext;
        store_qentry_free(dead);
        dead = next;
    }
}

static void store_qcache_drop_locked(store_qcache *qc, store_qentry *e, store_qentry **dead)
{
    store_qentry *f = store_qcache_unlink_locked(qc, e);
    if (f != NULL) {
        f->hnext = *dead;
        *dead = f;
    }
}

void store_qcache_free(store_qcache *qc)
{
    store_qentry *dead = NULL;

    if (qc == NULL) {
        return;
    }
    while (qc->lru_head != NULL) {
        store_qcache_drop_locked(qc, qc->lru_head, &dead);
    }
    store_qcache_free_list(dead);
    for (size_t b = 0; b < STORE_QCACHE_TABLE_BUCKETS; b++) {
        store_qtable *t = qc->tables[b];
        while (t != NULL) {
            store_qtable *next = t->next;
            free(t);
            t = next;
        }
    }
    free(qc->buckets);
    pthread_mutex_destroy(&qc->mu);
    free(qc);
}

/* ---- keys and results ------------------------------------------------------------------- */

static bool store_qbuf_put(uint8_t **buf, size_t *len, size_t *cap, const void *p, size_t n)
{
    if (*len + n > *cap) {
        size_t nc = *cap ? *cap : 64;
        while (nc < *len + n) {
            nc *= 2;
        }
        uint8_t *nb = realloc(*buf, nc);
        if (nb == NULL) {
            return false;
        }
        *buf = nb;
        *cap = nc;
    }
    if (n > 0) {
        memcpy(*buf + *len, p, n);
    }
    *len += n;
    return true;
}

hsb_err store_qkey_init(store_qkey *key, const char *sql, const hsb_value *params, size_t n)
{
    return store_qkey_init_scoped(key, 0, sql, params, n);
}

hsb_err store_qkey_init_scoped(store_qkey *key, uint8_t scope, const char *sql,
                               const hsb_value *params, size_t n)
{
    size_t sql_len = strlen(sql) + 1;
    size_t len = 1 + sql_len;
    uint8_t *p;

    key->buf = NULL;
    key->len = 0;
    key->hash = 0;
    for (size_t i = 0; i < n; i++) {
        switch (params[i].type) {
        case HSB_VALUE_NULL:
            len += 1;
            break;
        case HSB_VALUE_INT:
        case HSB_VALUE_REAL:
            len += 1 + 8;
            break;
        case HSB_VALUE_TEXT:
        case HSB_VALUE_BLOB:
            len += 1 + 8 + params[i].u.s.n;
            break;
        default:
            return HSB_EINVAL;
        }
    }
    key->buf = len <= sizeof(key->small) ? key->small : malloc(len);
    if (key->buf == NULL) {
        return HSB_ENOMEM;
    }
    p = key->buf;
    *p++ = scope;
    memcpy(p, sql, sql_len);
    p += sql_len;
    for (size_t i = 0; i < n; i++) {
        uint64_t vlen;
        *p++ = (uint8_t)params[i].type;
        switch (params[i].type) {
        case HSB_VALUE_INT:
            memcpy(p, &params[i].u.i, 8);
            p += 8;
            break;
        case HSB_VALUE_REAL:
            memcpy(p, &params[i].u.d, 8);
            p += 8;
            break;
        case HSB_VALUE_TEXT:
        case HSB_VALUE_BLOB:
            vlen = params[i].u.s.n;
            memcpy(p, &vlen, 8);
            p += 8;
            if (vlen > 0) {
                memcpy(p, params[i].u.s.p, vlen);
                p += vlen;
            }
            break;
        default:
            break;
        }
    }
    key->len = len;
    key->hash = store_hash64(STORE_HASH64_INIT, key->buf, key->len);
    return HSB_OK;
}

void store_qkey_fini(store_qkey *key)
{
    if (key->buf != key->small) {
        free(key->buf);
    }
    key->buf = NULL;
    key->len = 0;
}

void store_qresult_init(store_qresult *r, size_t limit)
{
    memset(r, 0, sizeof(*r));
    r->limit = limit;
}

void store_qresult_fini(store_qresult *r)
{
    free(r->buf);
    r->buf = NULL;
    r->len = r->cap = 0;
}

void store_qresult_add(store_qresult *r, const hsb_value *cols, size_t n)
{
    uint32_t nc = (uint32_t)n;
    bool ok;

    if (r->failed) {
        return;
    }
    ok = store_qbuf_put(&r->buf, &r->len, &r->cap, &nc, 4);
    for (size_t i = 0; ok && i < n; i++) {
        uint8_t tag = (uint8_t)cols[i].type;
        uint32_t len;
        ok = store_qbuf_put(&r->buf, &r->len, &r->cap, &tag, 1);
        switch (cols[i].type) {
        case HSB_VALUE_INT:
            ok = ok && store_qbuf_put(&r->buf, &r->len, &r->cap, &cols[i].u.i, 8);
            break;
        case HSB_VALUE_REAL:
            ok = ok && store_qbuf_put(&r->buf, &r->len, &r->cap, &cols[i].u.d, 8);
            break;
        case HSB_VALUE_TEXT:
        case HSB_VALUE_BLOB:
            len = (uint32_t)cols[i].u.s.n;
            ok = ok && store_qbuf_put(&r->buf, &r->len, &r->cap, &len, 4) &&
                 store_qbuf_put(&r->buf, &r->len, &r->cap, cols[i].u.s.p, cols[i].u.s.n) &&
                 store_qbuf_put(&r->buf, &r->len, &r->cap, "", 1);
            break;
        default:
            break;
        }
    }
    if (!ok || r->len > r->limit) {
        r->failed = true;
        store_qresult_fini(r);
        return;
    }
    r->rows++;
    if (n > r->max_cols) {
        r->max_cols = n;
    }
}

hsb_err store_qcache_replay(const store_qentry *e, hsb_row_fn row, void *arg)
{
    hsb_value stack_cols[16];
    hsb_value *cols = stack_cols;
    const uint8_t *p = e->res;

    if (e->max_cols > 16) {
        cols = malloc(e->max_cols * sizeof(*cols));
        if (cols == NULL) {
            return HSB_ENOMEM;
        }
    }
    for (size_t r = 0; r < e->rows; r++) {
        uint32_t nc;
        memcpy(&nc, p, 4);
        p += 4;
        for (uint32_t i = 0; i < nc; i++) {
            hsb_value *v = &cols[i];
            uint32_t len;
            v->type = (hsb_value_type)*p++;
            switch (v->type) {
            case HSB_VALUE_INT:
                memcpy(&v->u.i, p, 8);
                p += 8;
                break;
            case HSB_VALUE_REAL:
                memcpy(&v->u.d, p, 8);
                p += 8;
                break;
            case HSB_VALUE_TEXT:
            case HSB_VALUE_BLOB:
                memcpy(&len, p, 4);
                p += 4;
                v->u.s.p = p;
                v->u.s.n = len;
                p += len + 1;
                break;
            default:
                break;
            }
        }
        if (!row(arg, cols, nc)) {
            break;
        }
    }
    if (cols != stack_cols) {
        free(cols);
    }
    return HSB_OK;
}

/* ---- tables and generations ------------------------------------------------------------- */

static store_qtable *store_qcache_table_locked(store_qcache *qc, const char *name, bool create)
{
    uint64_t h = store_hash64(STORE_HASH64_INIT, name, strlen(name));
    store_qtable **bucket = &qc->tables[h % STORE_QCACHE_TABLE_BUCKETS];

    for (store_qtable *t = *bucket; t != NULL; t = t->next) {
        if (strcmp(t->name, name) == 0) {
            return t;
        }
    }
    if (!create) {
        return NULL;
    }
    size_t len = strlen(name);
    store_qtable *t = calloc(1, sizeof(*t) + len + 1);
    if (t == NULL) {
        return NULL;
    }
    memcpy(t->name, name, len + 1);
    t->next = *bucket;
    *bucket = t;
    return t;
}

static void store_qcache_drop_table_locked(store_qcache *qc, store_qtable *t, store_qentry **dead)
{
    while (t->tags != NULL) {
        qc->st.invalidations++;
        store_qcache_drop_locked(qc, t->tags->e, dead);
    }
}

static void store_qcache_drop_all_locked(store_qcache *qc, store_qentry **dead)
{
    while (qc->lru_head != NULL) {
        qc->st.invalidations++;
        store_qcache_drop_locked(qc, qc->lru_head, dead);
    }
}

hsb_err store_qcache_snapshot(store_qcache *qc, const char *const *tables, size_t n,
                              store_qsnap *snap)
{
    memset(snap, 0, sizeof(*snap));
    if (n > 0) {
        snap->tables = calloc(n, sizeof(*snap->tables));
        snap->gens = calloc(n, sizeof(*snap->gens));
        if (snap->tables == NULL || snap->gens == NULL) {
            store_qcache_snap_fini(snap);
            return HSB_ENOMEM;
        }
    }
    pthread_mutex_lock(&qc->mu);
    snap->global_gen = qc->global_gen;
    for (size_t i = 0; i < n; i++) {
        store_qtable *t = store_qcache_table_locked(qc, tables[i], true);
        if (t == NULL) {
            pthread_mutex_unlock(&qc->mu);
            store_qcache_snap_fini(snap);
            return HSB_ENOMEM;
        }
        snap->tables[i] = t;
        snap->gens[i] = t->gen;
    }
    snap->n = n;
    pthread_mutex_unlock(&qc->mu);
    return HSB_OK;
}

void store_qcache_snap_fini(store_qsnap *snap)
{
    free(snap->tables);
    free(snap->gens);
    memset(snap, 0, sizeof(*snap));
}

static void store_qcache_write_mark(store_qcache *qc, const char *const *tables, size_t n, bool all,
                                    int delta)
{
    store_qentry *dead = NULL;

    pthread_mutex_lock(&qc->mu);
    if (all) {
        qc->global_gen++;
        qc->global_writing += (unsigned)delta;
        store_qcache_drop_all_locked(qc, &dead);
    }
    for (size_t i = 0; i < n; i++) {
        store_qtable *t = store_qcache_table_locked(qc, tables[i], delta > 0);
        if (t == NULL) {
            if (delta > 0) {
                /* Out of memory: cannot mark the table; fall back to every table. */
                qc->global_gen++;
                store_qcache_drop_all_locked(qc, &dead);
            }
            continue;
        }
        t->gen++;
        t->writing += (unsigned)delta;
        store_qcache_drop_table_locked(qc, t, &dead);
    }
    pthread_mutex_unlock(&qc->mu);
    store_qcache_free_list(dead);
}

void store_qcache_write_begin(store_qcache *qc, const char *const *tables, size_t n, bool all)
{
    store_qcache_write_mark(qc, tables, n, all, 1);
}

void store_qcache_write_end(store_qcache *qc, const char *const *tables, size_t n, bool all)
{
    store_qcache_write_mark(qc, tables, n, all, -1);
}

void store_qcache_invalidate(store_qcache *qc, const char *table)
{
    store_qentry *dead = NULL;

    pthread_mutex_lock(&qc->mu);
    store_qtable *t = store_qcache_table_locked(qc, table, false);
    if (t != NULL) {
        t->gen++;
        store_qcache_drop_table_locked(qc, t, &dead);
    }
    pthread_mutex_unlock(&qc->mu);
    store_qcache_free_list(dead);
}

void store_qcache_flush(store_qcache *qc)
{
    store_qentry *dead = NULL;

    pthread_mutex_lock(&qc->mu);
    qc->global_gen++;
    qc->st.flushes++;
    store_qcache_drop_all_locked(qc, &dead);
    pthread_mutex_unlock(&qc->mu);
    store_qcache_free_list(dead);
}

/* ---- lookup and insert ------------------------------------------------------------------ */

static store_qentry *store_qcache_find_locked(store_qcache *qc, const store_qkey *key)
{
    for (store_qentry *e = qc->buckets[key->hash & (qc->n_buckets - 1)]; e != NULL; e = e->hnext) {
        if (e->hash == key->hash && e->key_len == key->len &&
            memcmp(e->key, key->buf, key->len) == 0) {
            return e;
        }
    }
    return NULL;
}

static void store_qcache_lru_front_locked(store_qcache *qc, store_qentry *e)
{
    if (qc->lru_head == e) {
        return;
    }
    /* unlink */
    e->lru_prev->lru_next = e->lru_next;
    if (e->lru_next != NULL) {
        e->lru_next->lru_prev = e->lru_prev;
    } else {
        qc->lru_tail = e->lru_prev;
    }
    /* push front */
    e->lru_prev = NULL;
    e->lru_next = qc->lru_head;
    qc->lru_head->lru_prev = e;
    qc->lru_head = e;
}

hsb_err store_qcache_lookup(store_qcache *qc, const store_qkey *key, store_qentry **out)
{
    store_qentry *dead = NULL;
    hsb_err err = HSB_ENOTFOUND;
    uint64_t now = qc->cfg.clock_ms(qc->cfg.clock_arg);

    pthread_mutex_lock(&qc->mu);
    store_qentry *e = store_qcache_find_locked(qc, key);
    if (e != NULL && e->expires_ms <= now) {
        qc->st.expirations++;
        store_qcache_drop_locked(qc, e, &dead);
        e = NULL;
    }
    if (e != NULL) {
        __atomic_add_fetch(&e->refs, 1, __ATOMIC_RELAXED);
        store_qcache_lru_front_locked(qc, e);
        qc->st.hits++;
        *out = e;
        err = HSB_OK;
    } else {
        qc->st.misses++;
    }
    pthread_mutex_unlock(&qc->mu);
    store_qcache_free_list(dead);
    return err;
}

void store_qcache_release(store_qcache *qc, store_qentry *e)
{
    (void)qc;
    /* No lock: an entry is found only while it is in the cache, which holds a reference, so the
     * count reaches zero only after it was unlinked, and nobody can take a new one then. */
    if (__atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        store_qentry_free(e);
    }
}

static void store_qcache_grow_locked(store_qcache *qc)
{
    size_t nb = qc->n_buckets * 2;
    store_qentry **buckets = calloc(nb, sizeof(*buckets));
    if (buckets == NULL) {
        return;
    }
    for (size_t b = 0; b < qc->n_buckets; b++) {
        store_qentry *e = qc->buckets[b];
        while (e != NULL) {
            store_qentry *next = e->hnext;
            e->hnext = buckets[e->hash & (nb - 1)];
            buckets[e->hash & (nb - 1)] = e;
            e = next;
        }
    }
    free(qc->buckets);
    qc->buckets = buckets;
    qc->n_buckets = nb;
}

bool store_qcache_insert(store_qcache *qc, const store_qkey *key, const store_qsnap *snap,
                         store_qresult *result, uint32_t ttl_ms)
{
    store_qentry *dead = NULL;
    store_qentry *e = NULL;
    bool fresh;
    uint64_t now = qc->cfg.clock_ms(qc->cfg.clock_arg);
    size_t bytes;

    if (ttl_ms == 0) {
        ttl_ms = qc->cfg.default_ttl_ms;
    }
    bytes = sizeof(*e) + snap->n * sizeof(store_qtag) + key->len + result->len;
    if (result->failed || bytes > qc->cfg.max_bytes / 8) {
        pthread_mutex_lock(&qc->mu);
        qc->st.too_big++;
        pthread_mutex_unlock(&qc->mu);
        goto out;
    }
    e = calloc(1, sizeof(*e) + snap->n * sizeof(store_qtag));
    if (e == NULL) {
        goto out;
    }
    e->key = malloc(key->len);
    if (e->key == NULL) {
        goto out;
    }
    memcpy(e->key, key->buf, key->len);
    e->key_len = key->len;
    e->hash = key->hash;
    e->res = result->buf;
    e->res_len = result->len;
    e->rows = result->rows;
    e->max_cols = result->max_cols;
    result->buf = NULL;
    result->len = result->cap = 0;
    e->expires_ms = now + ttl_ms;
    e->bytes = bytes;
    e->refs = 1;
    e->n_tags = snap->n;

    pthread_mutex_lock(&qc->mu);
    fresh = snap->global_gen == qc->global_gen && qc->global_writing == 0;
    for (size_t i = 0; fresh && i < snap->n; i++) {
        fresh = snap->tables[i]->gen == snap->gens[i] && snap->tables[i]->writing == 0;
    }
    if (!fresh) {
        qc->st.stale_refused++;
        pthread_mutex_unlock(&qc->mu);
        goto out;
    }
    store_qentry *old = store_qcache_find_locked(qc, key);
    if (old != NULL) {
        store_qcache_drop_locked(qc, old, &dead);
    }
    while (qc->lru_tail != NULL && qc->st.bytes + bytes > qc->cfg.max_bytes) {
        qc->st.evictions++;
        store_qcache_drop_locked(qc, qc->lru_tail, &dead);
    }
    e->hnext = qc->buckets[e->hash & (qc->n_buckets - 1)];
    qc->buckets[e->hash & (qc->n_buckets - 1)] = e;
    e->lru_next = qc->lru_head;
    if (qc->lru_head != NULL) {
        qc->lru_head->lru_prev = e;
    } else {
        qc->lru_tail = e;
    }
    qc->lru_head = e;
    for (size_t i = 0; i < snap->n; i++) {
        store_qtag *tg = &e->tags[i];
        tg->t = snap->tables[i];
        tg->e = e;
        tg->prev = NULL;
        tg->next = tg->t->tags;
        if (tg->next != NULL) {
            tg->next->prev = tg;
        }
        tg->t->tags = tg;
    }
    e->linked = true;
    qc->st.bytes += bytes;
    qc->st.entries++;
    qc->st.inserts++;
    if (qc->st.entries > qc->n_buckets) {
        store_qcache_grow_locked(qc);
    }
    pthread_mutex_unlock(&qc->mu);
    store_qcache_free_list(dead);
    return true;

out:
    if (e != NULL) {
        store_qentry_free(e);
    }
    store_qresult_fini(result);
    store_qcache_free_list(dead);
    return false;
}

void store_qcache_stats_get(store_qcache *qc, store_qcache_stats *st)
{
    pthread_mutex_lock(&qc->mu);
    *st = qc->st;
    pthread_mutex_unlock(&qc->mu);
    uint64_t total = st->hits + st->misses;
    st->hit_rate = total ? (double)st->hits / (double)total : 0.0;
}
