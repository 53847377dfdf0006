/*
 * bus/msg.c - refcounted messages (bus_msg_*).
 *
 * A bus_msg is the envelope and a private copy of its body in one allocation. It is shared by
 * every queue, batch and in-flight table that holds it; the reference count is the only field
 * that changes after routing, and it is a C11 atomic because agent threads drop their references
 * while the loop thread drops its own.
 */
#include <stdlib.h>
#include <string.h>

#include "bus/bus.h"

bus_msg *bus_msg_new(const hsb_envelope *env)
{
    size_t body_len = env->body != NULL ? env->body_len : 0;
    bus_msg *m = malloc(sizeof(*m) + body_len);
    if (m == NULL) {
        return NULL;
    }
    m->env = *env;
    if (body_len > 0) {
        memcpy(m->data, env->body, body_len);
        m->env.body = m->data;
    } else {
        m->env.body = NULL;
        m->env.body_len = 0;
    }
    m->enqueue_ms = 0;
    m->size = sizeof(*m) + body_len;
    m->sender_session = 0;
    m->durable_dests = 0;
    atomic_init(&m->refs, 1);
    return m;
}

bus_msg *bus_msg_ref(bus_msg *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void bus_msg_unref(bus_msg *m)
{
    if (m == NULL) {
        return;
    }
    /* Release our writes; the thread that frees acquires everyone else's. */
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1) {
        free(m);
    }
}
