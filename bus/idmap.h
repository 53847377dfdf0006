/*
 * bus/idmap.h - an open-addressing hash map from 64-bit ids to 64-bit values (bus_idmap_*).
 * Used for in-flight tables (id -> slot), clients by session and pending saves by token. Key 0 is
 * reserved (ids and sessions start at 1). The table doubles when 3/4 full; deletion shifts
 * entries back, so there are no tombstones.
 * Threads: the owner's thread. Nothing blocks.
 */
#ifndef HSB_BUS_IDMAP_H
#define HSB_BUS_IDMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/err.h"

typedef struct bus_idmap_slot {
    uint64_t key; /* 0 = empty */
    uint64_t val;
} bus_idmap_slot;

typedef struct bus_idmap {
    bus_idmap_slot *v;
    size_t cap; /* power of two or 0 */
    size_t len;
} bus_idmap;

void bus_idmap_init(bus_idmap *m);
void bus_idmap_fini(bus_idmap *m);

/* bus_idmap_put inserts or replaces key -> val. Errors: HSB_EINVAL (key 0), HSB_ENOMEM. */
hsb_err bus_idmap_put(bus_idmap *m, uint64_t key, uint64_t val);

/* bus_idmap_get stores the value of key in *val (if val is not NULL) and returns true, or returns
 * false when key is absent. */
bool bus_idmap_get(const bus_idmap *m, uint64_t key, uint64_t *val);

/* bus_idmap_del removes key and returns whether it was present. */
bool bus_idmap_del(bus_idmap *m, uint64_t key);

#endif /* HSB_BUS_IDMAP_H */
