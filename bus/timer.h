/*
 * bus/timer.h - a min-heap of deadlines (bus_timer_*), keyed by clock milliseconds.
 *
 * Entries are lazy: the owner never removes one when what it stood for goes away (a message is
 * acked, a fetch answered); it checks, when the entry comes due, whether the entry is still
 * current (by comparing `gen` with the object's own generation, or by looking `id` up). So there is
 * no cancellation and no timer object per message, just a heap entry, and the heap array grows by
 * doubling.
 *
 * Threads: the bus's loop thread. Nothing blocks or calls back.
 */
#ifndef HSB_BUS_TIMER_H
#define HSB_BUS_TIMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/err.h"

typedef enum bus_timer_kind {
    BUS_TIMER_SWEEP = 0, /* obj: agent; expire queued messages */
    BUS_TIMER_BATCH,     /* obj: agent; release lingering batches */
    BUS_TIMER_FETCH,     /* id: client session; answer parked fetches whose wait passed */
    BUS_TIMER_ACK,       /* id: client session; scan its in-flight table for ack timeouts */
    BUS_TIMER_BREAKER,   /* obj: agent; OPEN -> HALF_OPEN */
} bus_timer_kind;

typedef struct bus_timer_entry {
    uint64_t at; /* clock ms when due */
    uint64_t id;
    uint64_t id2;
    uint64_t gen;
    void *obj;
    bus_timer_kind kind;
} bus_timer_entry;

typedef struct bus_timer_heap {
    bus_timer_entry *v;
    size_t len;
    size_t cap;
} bus_timer_heap;

void bus_timer_init(bus_timer_heap *h);
void bus_timer_fini(bus_timer_heap *h);

/* bus_timer_add inserts a copy of e. Errors: HSB_ENOMEM (nothing inserted). */
hsb_err bus_timer_add(bus_timer_heap *h, const bus_timer_entry *e);

/* bus_timer_pop_due removes the earliest entry due at or before now into *out and returns true;
 * returns false when none is due. */
bool bus_timer_pop_due(bus_timer_heap *h, uint64_t now, bus_timer_entry *out);

/* bus_timer_next returns the time of the earliest entry, or 0 when the heap is empty. */
uint64_t bus_timer_next(const bus_timer_heap *h);

#endif /* HSB_BUS_TIMER_H */
