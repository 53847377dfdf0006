/*
 * bus/prioq.c - four-lane bounded priority queue with weighted round robin (bus_prioq_*).
 * See prioq.h for the rules; the rings are power-of-two sized and grow by doubling.
 */
#include <stdlib.h>
#include <string.h>

#include "bus/prioq.h"

static bus_prioq_entry *bus_prioq_ring_at(bus_prioq_ring *r, size_t i)
{
    return &r->v[(r->head + i) & (r->cap - 1)];
}

static hsb_err bus_prioq_ring_reserve(bus_prioq_ring *r)
{
    if (r->len < r->cap) {
        return HSB_OK;
    }
    size_t ncap = r->cap != 0 ? r->cap * 2 : 16;
    bus_prioq_entry *nv = malloc(ncap * sizeof(*nv));
    if (nv == NULL) {
        return HSB_ENOMEM;
    }
    for (size_t i = 0; i < r->len; i++) {
        nv[i] = *bus_prioq_ring_at(r, i);
    }
    free(r->v);
    r->v = nv;
    r->cap = ncap;
    r->head = 0;
    return HSB_OK;
}

static void bus_prioq_ring_remove_at(bus_prioq_ring *r, size_t i)
{
    for (size_t j = i; j + 1 < r->len; j++) {
        *bus_prioq_ring_at(r, j) = *bus_prioq_ring_at(r, j + 1);
    }
    r->len--;
}

void bus_prioq_init(bus_prioq *q, size_t max_msgs, size_t max_bytes, const uint32_t weights[3])
{
    memset(q, 0, sizeof(*q));
    q->max_msgs = max_msgs;
    q->max_bytes = max_bytes;
    for (int i = 0; i < 3; i++) {
        q->weights[i] = weights[i] != 0 ? weights[i] : 1;
    }
    q->wrr_lane = 1;
}

void bus_prioq_fini(bus_prioq *q)
{
    for (unsigned l = 0; l < HSB_PRIO_COUNT; l++) {
        bus_prioq_ring *r = &q->lanes[l];
        for (size_t i = 0; i < r->len; i++) {
            bus_msg_unref(bus_prioq_ring_at(r, i)->msg);
        }
        free(r->v);
        r->v = NULL;
        r->cap = r->len = r->head = 0;
    }
    q->count = 0;
    q->bytes = 0;
}

void bus_prioq_set_limits(bus_prioq *q, size_t max_msgs, size_t max_bytes)
{
    q->max_msgs = max_msgs;
    q->max_bytes = max_bytes;
}

static unsigned bus_prioq_lane_of(const bus_msg *m)
{
    return m->env.prio < HSB_PRIO_COUNT ? m->env.prio : HSB_PRIO_NORMAL;
}

static bool bus_prioq_fits(const bus_prioq *q, size_t count, size_t bytes)
{
    return count <= q->max_msgs && bytes <= q->max_bytes;
}

static hsb_err bus_prioq_push(bus_prioq *q, bus_prioq_entry e, bool front)
{
    bus_prioq_ring *r = &q->lanes[bus_prioq_lane_of(e.msg)];
    hsb_err err = bus_prioq_ring_reserve(r);
    if (err != HSB_OK) {
        return err;
    }
    if (front) {
        r->head = (r->head + r->cap - 1) & (r->cap - 1);
        r->v[r->head] = e;
    } else {
        r->v[(r->head + r->len) & (r->cap - 1)] = e;
    }
    r->len++;
    q->count++;
    q->bytes += e.msg->size;
    return HSB_OK;
}

hsb_err bus_prioq_put(bus_prioq *q, bus_prioq_entry e, size_t reserve_msgs, size_t reserve_bytes,
                      bus_prioq_entry *victims, size_t max_victims, size_t *n_victims)
{
    unsigned lane = bus_prioq_lane_of(e.msg);
    size_t count = q->count + reserve_msgs + 1;
    size_t bytes = q->bytes + reserve_bytes + e.msg->size;
    /* Planned victims: lane and index, collected newest first from the lowest lane up, so that
     * removing them in collection order never shifts one still to be removed. */
    unsigned v_lane[BUS_PRIOQ_VICTIMS_MAX];
    size_t v_idx[BUS_PRIOQ_VICTIMS_MAX];
    size_t nv = 0;

    *n_victims = 0;
    if (max_victims > BUS_PRIOQ_VICTIMS_MAX) {
        max_victims = BUS_PRIOQ_VICTIMS_MAX;
    }
    for (unsigned l = HSB_PRIO_COUNT - 1; l > lane && !bus_prioq_fits(q, count, bytes); l--) {
        bus_prioq_ring *r = &q->lanes[l];
        for (size_t i = r->len; i-- > 0 && !bus_prioq_fits(q, count, bytes);) {
            const bus_prioq_entry *c = bus_prioq_ring_at(r, i);
            if (c->msg->env.durable) {
                continue;
            }
            if (nv == max_victims) {
                return HSB_EBUSY;
            }
            v_lane[nv] = l;
            v_idx[nv] = i;
            nv++;
            count--;
            bytes -= c->msg->size;
        }
    }
    if (!bus_prioq_fits(q, count, bytes)) {
        return HSB_EBUSY;
    }
    /* Make sure the push cannot fail before anything is removed. */
    hsb_err err = bus_prioq_ring_reserve(&q->lanes[lane]);
    if (err != HSB_OK) {
        return err;
    }
    for (size_t k = 0; k < nv; k++) {
        bus_prioq_ring *r = &q->lanes[v_lane[k]];
        victims[k] = *bus_prioq_ring_at(r, v_idx[k]);
        bus_prioq_ring_remove_at(r, v_idx[k]);
        q->count--;
        q->bytes -= victims[k].msg->size;
    }
    *n_victims = nv;
    return bus_prioq_push(q, e, false);
}

bool bus_prioq_has_room(const bus_prioq *q, size_t size, size_t reserve_msgs, size_t reserve_bytes)
{
    return bus_prioq_fits(q, q->count + reserve_msgs + 1, q->bytes + reserve_bytes + size);
}

hsb_err bus_prioq_put_force(bus_prioq *q, bus_prioq_entry e, bool front)
{
    return bus_prioq_push(q, e, front);
}

static void bus_prioq_pop(bus_prioq *q, unsigned lane, bus_prioq_entry *out)
{
    bus_prioq_ring *r = &q->lanes[lane];
    *out = r->v[r->head];
    r->head = (r->head + 1) & (r->cap - 1);
    r->len--;
    q->count--;
    q->bytes -= out->msg->size;
}

bool bus_prioq_get(bus_prioq *q, bus_prioq_entry *out)
{
    if (q->lanes[HSB_PRIO_CRITICAL].len > 0) {
        bus_prioq_pop(q, HSB_PRIO_CRITICAL, out);
        return true;
    }
    /* Weighted round robin over high, normal, low: a lane keeps its turn for weight messages or
     * until it is empty. Four steps visit every lane and come back to the first one. */
    for (int step = 0; step < 4; step++) {
        unsigned l = q->wrr_lane;
        if (q->lanes[l].len > 0 && q->wrr_used < q->weights[l - 1]) {
            q->wrr_used++;
            bus_prioq_pop(q, l, out);
            return true;
        }
        q->wrr_lane = l == HSB_PRIO_LOW ? HSB_PRIO_HIGH : l + 1;
        q->wrr_used = 0;
    }
    return false;
}

size_t bus_prioq_remove_if(bus_prioq *q, bool (*take)(void *arg, const bus_prioq_entry *e),
                           void *arg)
{
    size_t taken = 0;
    for (unsigned l = 0; l < HSB_PRIO_COUNT; l++) {
        bus_prioq_ring *r = &q->lanes[l];
        size_t keep = 0;
        for (size_t i = 0; i < r->len; i++) {
            bus_prioq_entry e = *bus_prioq_ring_at(r, i);
            size_t size = e.msg->size;
            if (take(arg, &e)) {
                taken++;
                q->count--;
                q->bytes -= size;
                continue;
            }
            *bus_prioq_ring_at(r, keep++) = e;
        }
        r->len = keep;
    }
    return taken;
}

size_t bus_prioq_lane_len(const bus_prioq *q, unsigned lane)
{
    return lane < HSB_PRIO_COUNT ? q->lanes[lane].len : 0;
}
