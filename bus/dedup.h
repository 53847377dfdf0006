/*
 * bus/dedup.h - duplicate-send suppression (bus_dedup_*): (agent, cid) -> the id of the first
 * message accepted with that key, remembered for window_ms and for at most max entries.
 *
 * Entries live in a ring in insertion order, which is also expiry order (the window is the same
 * for all), so expiry and eviction pop from the head; an id map from the key's 64-bit hash to the
 * entry's sequence number finds them. Keys are compared in full, so a hash collision can only
 * make a duplicate go unnoticed, never answer a message with another's id.
 *
 * Threads: the bus's loop thread. Nothing blocks or calls back.
 */
#ifndef HSB_BUS_DEDUP_H
#define HSB_BUS_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus/idmap.h"
#include "proto/envelope.h"

typedef struct bus_dedup_entry {
    uint64_t hash;
    uint64_t id;
    uint64_t at_ms;
    char agent[HSB_NAME_MAX + 1];
    char cid[HSB_CID_MAX + 1];
} bus_dedup_entry;

typedef struct bus_dedup {
    bus_dedup_entry *v;
    size_t cap; /* power of two or 0; grows up to the first power of two >= max */
    size_t head;
    size_t len;
    uint64_t head_seq; /* sequence number of v[head] */
    bus_idmap index;   /* hash -> sequence number + 1 */
    uint32_t window_ms;
    size_t max;
} bus_dedup;

void bus_dedup_init(bus_dedup *d, uint32_t window_ms, size_t max);
void bus_dedup_fini(bus_dedup *d);
void bus_dedup_set_limits(bus_dedup *d, uint32_t window_ms, size_t max);

/* bus_dedup_find stores the first id for (agent, cid) in *id and returns true when a message with
 * that key was accepted less than window_ms before now. */
bool bus_dedup_find(bus_dedup *d, const char *agent, const char *cid, uint64_t now, uint64_t *id);

/* bus_dedup_add remembers (agent, cid) -> id from now, evicting the oldest entry when full.
 * Errors: HSB_ENOMEM (then nothing is remembered). */
hsb_err bus_dedup_add(bus_dedup *d, const char *agent, const char *cid, uint64_t id, uint64_t now);

/* bus_dedup_expire forgets entries older than the window. */
void bus_dedup_expire(bus_dedup *d, uint64_t now);

/* bus_dedup_len returns the number of remembered keys. */
size_t bus_dedup_len(const bus_dedup *d);

#endif /* HSB_BUS_DEDUP_H */
