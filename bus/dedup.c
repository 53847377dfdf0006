/* bus/dedup.c - (agent, cid) duplicate suppression with a window and a bound (bus_dedup_*). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/dedup.h"

static uint64_t bus_dedup_hash(const char *agent, const char *cid)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const char *p = agent; *p != '\0'; p++) {
        h = (h ^ (uint8_t)*p) * 0x100000001b3ULL;
    }
    h = (h ^ 0xffu) * 0x100000001b3ULL; /* separator no name contains */
    for (const char *p = cid; *p != '\0'; p++) {
        h = (h ^ (uint8_t)*p) * 0x100000001b3ULL;
    }
    return h != 0 ? h : 1;
}

void bus_dedup_init(bus_dedup *d, uint32_t window_ms, size_t max)
{
    memset(d, 0, sizeof(*d));
    bus_idmap_init(&d->index);
    d->window_ms = window_ms;
    d->max = max;
}

void bus_dedup_fini(bus_dedup *d)
{
    free(d->v);
    bus_idmap_fini(&d->index);
    memset(d, 0, sizeof(*d));
}

static bus_dedup_entry *bus_dedup_at(bus_dedup *d, uint64_t seq)
{
    return &d->v[(d->head + (size_t)(seq - d->head_seq)) & (d->cap - 1)];
}

static void bus_dedup_pop(bus_dedup *d)
{
    bus_dedup_entry *e = &d->v[d->head];
    uint64_t seq1;
    if (bus_idmap_get(&d->index, e->hash, &seq1) && seq1 == d->head_seq + 1) {
        bus_idmap_del(&d->index, e->hash);
    }
    d->head = (d->head + 1) & (d->cap - 1);
    d->head_seq++;
    d->len--;
}

void bus_dedup_set_limits(bus_dedup *d, uint32_t window_ms, size_t max)
{
    d->window_ms = window_ms;
    d->max = max;
    while (d->len > max) {
        bus_dedup_pop(d);
    }
}

void bus_dedup_expire(bus_dedup *d, uint64_t now)
{
    while (d->len > 0 && d->v[d->head].at_ms + d->window_ms <= now) {
        bus_dedup_pop(d);
    }
}

bool bus_dedup_find(bus_dedup *d, const char *agent, const char *cid, uint64_t now, uint64_t *id)
{
    uint64_t seq1;
    uint64_t h = bus_dedup_hash(agent, cid);
    if (!bus_idmap_get(&d->index, h, &seq1)) {
        return false;
    }
    bus_dedup_entry *e = bus_dedup_at(d, seq1 - 1);
    if (e->at_ms + d->window_ms <= now || strcmp(e->agent, agent) != 0 ||
        strcmp(e->cid, cid) != 0) {
        return false;
    }
    *id = e->id;
    return true;
}

static hsb_err bus_dedup_grow(bus_dedup *d)
{
    size_t ncap = d->cap != 0 ? d->cap * 2 : 64;
    bus_dedup_entry *nv = malloc(ncap * sizeof(*nv));
    if (nv == NULL) {
        return HSB_ENOMEM;
    }
    for (size_t i = 0; i < d->len; i++) {
        nv[i] = d->v[(d->head + i) & (d->cap - 1)];
    }
    free(d->v);
    d->v = nv;
    d->cap = ncap;
    d->head = 0;
    return HSB_OK;
}

hsb_err bus_dedup_add(bus_dedup *d, const char *agent, const char *cid, uint64_t id, uint64_t now)
{
    if (d->max == 0) {
        return HSB_OK;
    }
    bus_dedup_expire(d, now);
    while (d->len >= d->max) {
        bus_dedup_pop(d);
    }
    if (d->len == d->cap) {
        hsb_err err = bus_dedup_grow(d);
        if (err != HSB_OK) {
            return err;
        }
    }
    uint64_t seq = d->head_seq + d->len;
    uint64_t h = bus_dedup_hash(agent, cid);
    hsb_err err = bus_idmap_put(&d->index, h, seq + 1);
    if (err != HSB_OK) {
        return err;
    }
    d->len++;
    bus_dedup_entry *e = bus_dedup_at(d, seq);
    e->hash = h;
    e->id = id;
    e->at_ms = now;
    snprintf(e->agent, sizeof(e->agent), "%s", agent);
    snprintf(e->cid, sizeof(e->cid), "%s", cid);
    return HSB_OK;
}

size_t bus_dedup_len(const bus_dedup *d)
{
    return d->len;
}
