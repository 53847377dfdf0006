/* bus/idmap.c - linear-probing u64 -> u64 map with backward-shift deletion (bus_idmap_*). */
#include <stdlib.h>
#include <string.h>

#include "bus/idmap.h"

/* The full murmur3 finaliser. Keys are mostly consecutive ids; a weaker mix maps them onto long
 * runs of neighbouring slots, and deletion, which scans to the end of a run, then gets slow. */
static size_t bus_idmap_hash(uint64_t k, size_t cap)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return (size_t)k & (cap - 1);
}

void bus_idmap_init(bus_idmap *m)
{
    memset(m, 0, sizeof(*m));
}

void bus_idmap_fini(bus_idmap *m)
{
    free(m->v);
    memset(m, 0, sizeof(*m));
}

static hsb_err bus_idmap_grow(bus_idmap *m)
{
    size_t ncap = m->cap != 0 ? m->cap * 2 : 16;
    bus_idmap_slot *nv = calloc(ncap, sizeof(*nv));
    if (nv == NULL) {
        return HSB_ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->v[i].key == 0) {
            continue;
        }
        size_t j = bus_idmap_hash(m->v[i].key, ncap);
        while (nv[j].key != 0) {
            j = (j + 1) & (ncap - 1);
        }
        nv[j] = m->v[i];
    }
    free(m->v);
    m->v = nv;
    m->cap = ncap;
    return HSB_OK;
}

hsb_err bus_idmap_put(bus_idmap *m, uint64_t key, uint64_t val)
{
    if (key == 0) {
        return HSB_EINVAL;
    }
    if ((m->len + 1) * 4 > m->cap * 3) {
        hsb_err err = bus_idmap_grow(m);
        if (err != HSB_OK) {
            return err;
        }
    }
    size_t i = bus_idmap_hash(key, m->cap);
    while (m->v[i].key != 0 && m->v[i].key != key) {
        i = (i + 1) & (m->cap - 1);
    }
    if (m->v[i].key == 0) {
        m->len++;
    }
    m->v[i].key = key;
    m->v[i].val = val;
    return HSB_OK;
}

static bool bus_idmap_find(const bus_idmap *m, uint64_t key, size_t *at)
{
    if (m->cap == 0 || key == 0) {
        return false;
    }
    size_t i = bus_idmap_hash(key, m->cap);
    while (m->v[i].key != 0) {
        if (m->v[i].key == key) {
            *at = i;
            return true;
        }
        i = (i + 1) & (m->cap - 1);
    }
    return false;
}

bool bus_idmap_get(const bus_idmap *m, uint64_t key, uint64_t *val)
{
    size_t i;
    if (!bus_idmap_find(m, key, &i)) {
        return false;
    }
    if (val != NULL) {
        *val = m->v[i].val;
    }
    return true;
}

bool bus_idmap_del(bus_idmap *m, uint64_t key)
{
    size_t i;
    if (!bus_idmap_find(m, key, &i)) {
        return false;
    }
    /* Backward-shift: move later members of the probe run into the hole when their home slot
     * does not lie cyclically between the hole and their position. */
    size_t hole = i;
    size_t j = i;
    for (;;) {
        j = (j + 1) & (m->cap - 1);
        if (m->v[j].key == 0) {
            break;
        }
        size_t home = bus_idmap_hash(m->v[j].key, m->cap);
        bool between = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (!between) {
            m->v[hole] = m->v[j];
            hole = j;
        }
    }
    m->v[hole].key = 0;
    m->v[hole].val = 0;
    m->len--;
    return true;
}
