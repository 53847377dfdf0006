/* bus/batch.c - hold messages by batch key until batch_max or linger (bus_batch_*). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/batch.h"

void bus_batch_init(bus_batcher *bt)
{
    memset(bt, 0, sizeof(*bt));
}

void bus_batch_fini(bus_batcher *bt)
{
    for (size_t i = 0; i < bt->n_groups; i++) {
        bus_batch_group *g = &bt->groups[i];
        for (size_t j = 0; j < g->len; j++) {
            bus_msg_unref(g->v[j].msg);
        }
        free(g->v);
    }
    free(bt->groups);
    memset(bt, 0, sizeof(*bt));
}

static bus_batch_group *bus_batch_find(bus_batcher *bt, const char *key)
{
    for (size_t i = 0; i < bt->n_groups; i++) {
        if (bt->groups[i].key[0] != '\0' && strcmp(bt->groups[i].key, key) == 0) {
            return &bt->groups[i];
        }
    }
    return NULL;
}

static bus_batch_group *bus_batch_slot(bus_batcher *bt)
{
    for (size_t i = 0; i < bt->n_groups; i++) {
        if (bt->groups[i].key[0] == '\0') {
            return &bt->groups[i];
        }
    }
    if (bt->n_groups == bt->cap_groups) {
        size_t ncap = bt->cap_groups != 0 ? bt->cap_groups * 2 : 4;
        bus_batch_group *ng = realloc(bt->groups, ncap * sizeof(*ng));
        if (ng == NULL) {
            return NULL;
        }
        bt->groups = ng;
        bt->cap_groups = ncap;
    }
    bus_batch_group *g = &bt->groups[bt->n_groups++];
    memset(g, 0, sizeof(*g));
    return g;
}

hsb_err bus_batch_add(bus_batcher *bt, const char *key, bus_prioq_entry e, uint64_t now,
                      uint32_t batch_max, bool *ready)
{
    bus_batch_group *g = bus_batch_find(bt, key);
    bool fresh = g == NULL;
    if (fresh) {
        g = bus_batch_slot(bt);
        if (g == NULL) {
            return HSB_ENOMEM;
        }
    }
    if (g->len == g->cap) {
        size_t ncap =
            g->cap != 0 ? g->cap * 2 : (batch_max > 0 && batch_max < 1024 ? batch_max : 16);
        bus_prioq_entry *nv = realloc(g->v, ncap * sizeof(*nv));
        if (nv == NULL) {
            return HSB_ENOMEM; /* a fresh slot stays free: its key is still "" */
        }
        g->v = nv;
        g->cap = ncap;
    }
    if (fresh) {
        snprintf(g->key, sizeof(g->key), "%s", key);
        g->first_ms = now;
    }
    g->v[g->len++] = e;
    bt->held_msgs++;
    bt->held_bytes += e.msg->size;
    *ready = g->len >= batch_max;
    return HSB_OK;
}

static size_t bus_batch_release_group(bus_batcher *bt, bus_batch_group *g, bus_prioq *q)
{
    size_t done = 0;
    while (done < g->len) {
        if (bus_prioq_put_force(q, g->v[done], false) != HSB_OK) {
            break; /* out of memory: keep the rest held; the linger timer retries */
        }
        bt->held_msgs--;
        bt->held_bytes -= g->v[done].msg->size;
        done++;
    }
    if (done == g->len) {
        g->len = 0;
        g->key[0] = '\0';
    } else {
        memmove(g->v, g->v + done, (g->len - done) * sizeof(*g->v));
        g->len -= done;
    }
    return done;
}

size_t bus_batch_release_key(bus_batcher *bt, const char *key, bus_prioq *q)
{
    bus_batch_group *g = bus_batch_find(bt, key);
    return g != NULL ? bus_batch_release_group(bt, g, q) : 0;
}

size_t bus_batch_release_due(bus_batcher *bt, uint64_t now, uint32_t linger_ms, bus_prioq *q)
{
    size_t n = 0;
    for (size_t i = 0; i < bt->n_groups; i++) {
        bus_batch_group *g = &bt->groups[i];
        if (g->key[0] != '\0' && g->first_ms + linger_ms <= now) {
            n += bus_batch_release_group(bt, g, q);
        }
    }
    return n;
}

uint64_t bus_batch_next_due(const bus_batcher *bt, uint32_t linger_ms)
{
    uint64_t next = 0;
    for (size_t i = 0; i < bt->n_groups; i++) {
        const bus_batch_group *g = &bt->groups[i];
        if (g->key[0] != '\0' && (next == 0 || g->first_ms + linger_ms < next)) {
            next = g->first_ms + linger_ms;
        }
    }
    return next;
}

size_t bus_batch_remove_if(bus_batcher *bt, bool (*take)(void *arg, const bus_prioq_entry *e),
                           void *arg)
{
    size_t taken = 0;
    for (size_t i = 0; i < bt->n_groups; i++) {
        bus_batch_group *g = &bt->groups[i];
        size_t keep = 0;
        for (size_t j = 0; j < g->len; j++) {
            bus_prioq_entry e = g->v[j];
            size_t size = e.msg->size;
            if (take(arg, &e)) {
                taken++;
                bt->held_msgs--;
                bt->held_bytes -= size;
                continue;
            }
            g->v[keep++] = e;
        }
        g->len = keep;
        if (keep == 0) {
            g->key[0] = '\0';
        }
    }
    return taken;
}
