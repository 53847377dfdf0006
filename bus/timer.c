/* bus/timer.c - binary min-heap of lazy deadlines (bus_timer_*); see timer.h. */
#include <stdlib.h>
#include <string.h>

#include "bus/timer.h"

void bus_timer_init(bus_timer_heap *h)
{
    memset(h, 0, sizeof(*h));
}

void bus_timer_fini(bus_timer_heap *h)
{
    free(h->v);
    memset(h, 0, sizeof(*h));
}

static void bus_timer_swap(bus_timer_heap *h, size_t a, size_t b)
{
    bus_timer_entry t = h->v[a];
    h->v[a] = h->v[b];
    h->v[b] = t;
}

hsb_err bus_timer_add(bus_timer_heap *h, const bus_timer_entry *e)
{
    if (h->len == h->cap) {
        size_t ncap = h->cap != 0 ? h->cap * 2 : 64;
        bus_timer_entry *nv = realloc(h->v, ncap * sizeof(*nv));
        if (nv == NULL) {
            return HSB_ENOMEM;
        }
        h->v = nv;
        h->cap = ncap;
    }
    size_t i = h->len++;
    h->v[i] = *e;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->v[p].at <= h->v[i].at) {
            break;
        }
        bus_timer_swap(h, p, i);
        i = p;
    }
    return HSB_OK;
}

bool bus_timer_pop_due(bus_timer_heap *h, uint64_t now, bus_timer_entry *out)
{
    if (h->len == 0 || h->v[0].at > now) {
        return false;
    }
    *out = h->v[0];
    h->v[0] = h->v[--h->len];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->len && h->v[l].at < h->v[m].at) {
            m = l;
        }
        if (r < h->len && h->v[r].at < h->v[m].at) {
            m = r;
        }
        if (m == i) {
            break;
        }
        bus_timer_swap(h, i, m);
        i = m;
    }
    return true;
}

uint64_t bus_timer_next(const bus_timer_heap *h)
{
    return h->len > 0 ? h->v[0].at : 0;
}
