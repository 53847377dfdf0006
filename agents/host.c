/*
 * agents/host.c - worker threads, mailbox and the hsb_agent_env given to each agent.
 *
 * Design note. The mailbox is a FIFO of batches under one mutex and condition variable. A worker
 * takes a whole batch, releases the lock, and calls handle_batch; the agent's sends during that
 * call are collected in the batch's outbox (found through a thread-local pointer) and travel back
 * with the results in one post. Sends from threads of the agent's own, outside handle_batch, go
 * as a batch of their own, bounded by the daemon's inbox limit so a runaway agent feels E_BUSY
 * instead of growing the daemon's memory.
 */
#include "agents/host.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct agent_host {
    hsb_agent_env env; /* first: env->host points back here */
    const hsb_agent_ops *ops;
    void *state;
    char name[HSB_NAME_MAX + 1];
    size_t name_len;
    agent_host_services svc;
    void *owner;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    agent_batch **box; /* ring of queued batches */
    size_t box_cap, box_head, box_len;
    bool stopping;
    bool init_done;
    hsb_err init_err;
    uint32_t running; /* workers that have not yet exited */

    pthread_t *threads;
    uint32_t n_threads;
};

/* The batch being handled on this thread, so env->send can add to its outbox. */
static _Thread_local agent_batch *agent_host_current;

static uint64_t agent_host_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- batches ----------------------------------------------------------------------------- */

static agent_batch *agent_batch_new(agent_host *h, size_t n)
{
    /* One allocation: the batch, its deliveries and its results. */
    size_t sz = sizeof(agent_batch) + n * (sizeof(bus_delivery) + sizeof(hsb_err));
    agent_batch *b = calloc(1, sz);
    if (b == NULL) {
        return NULL;
    }
    b->host = h;
    b->n = n;
    b->d = (bus_delivery *)(b + 1);
    b->results = (hsb_err *)(b->d + n);
    return b;
}

void agent_batch_free(agent_batch *b)
{
    if (b == NULL) {
        return;
    }
    for (size_t i = 0; i < b->n; i++) {
        bus_msg_unref(b->d[i].msg);
    }
    for (size_t i = 0; i < b->n_out; i++) {
        bus_msg_unref(b->outbox[i]);
    }
    free(b->outbox);
    free(b);
}

static hsb_err agent_batch_add_out(agent_batch *b, bus_msg *m)
{
    if (b->n_out == b->cap_out) {
        size_t cap = b->cap_out ? b->cap_out * 2 : 8;
        bus_msg **o = realloc(b->outbox, cap * sizeof(*o));
        if (o == NULL) {
            return HSB_ENOMEM;
        }
        b->outbox = o;
        b->cap_out = cap;
    }
    b->outbox[b->n_out++] = m;
    return HSB_OK;
}

/* ---- hsb_agent_env ----------------------------------------------------------------------- */

static agent_host *agent_host_of(hsb_agent_env *env)
{
    return (agent_host *)env->host;
}

static hsb_err agent_env_send(hsb_agent_env *env, const hsb_envelope *msg)
{
    agent_host *h = agent_host_of(env);
    hsb_envelope e = *msg;
    /* The broker sets these; an agent cannot choose its sender or id. */
    e.id = 0;
    e.deadline = 0;
    e.deliveries = 0;
    memcpy(e.from, h->name, h->name_len + 1); /* hot path: no snprintf */

    bus_msg *m = bus_msg_new(&e);
    if (m == NULL) {
        return HSB_ENOMEM;
    }
    agent_batch *cur = agent_host_current;
    if (cur != NULL && cur->host == h) {
        hsb_err err = agent_batch_add_out(cur, m);
        if (err != HSB_OK) {
            bus_msg_unref(m);
        }
        return err;
    }
    /* Outside handle_batch: a batch of its own, bounded by the daemon's inbox. */
    agent_batch *b = agent_batch_new(h, 0);
    if (b == NULL || agent_batch_add_out(b, m) != HSB_OK) {
        bus_msg_unref(m);
        agent_batch_free(b);
        return HSB_ENOMEM;
    }
    hsb_err err = h->svc.post(h->svc.arg, b, true);
    if (err != HSB_OK) {
        agent_batch_free(b); /* drops m too */
    }
    return err;
}

static hsb_err agent_env_reply(hsb_agent_env *env, const hsb_envelope *req, const void *body,
                               size_t len)
{
    hsb_envelope e;
    hsb_envelope_init(&e);
    e.corr = req->id;
    e.prio = req->prio;
    memcpy(e.to, req->from, sizeof(e.to)); /* for the log; routing follows corr */
    memcpy(e.type, req->type, sizeof(e.type));
    memcpy(e.batch, req->batch, sizeof(e.batch));
    e.body = body;
    e.body_len = len;
    return agent_env_send(env, &e);
}

static hsb_err agent_env_publish(hsb_agent_env *env, const char *topic, const void *body,
                                 size_t len)
{
    hsb_envelope e;
    hsb_envelope_init(&e);
    size_t tl = strlen(topic);
    if (!hsb_name_valid(topic, tl)) {
        return HSB_EBADNAME;
    }
    memcpy(e.topic, topic, tl + 1);
    e.body = body;
    e.body_len = len;
    return agent_env_send(env, &e);
}

static hsb_err agent_env_query(hsb_agent_env *env, const char *sql, const hsb_value *params,
                               size_t n, uint32_t ttl_ms, hsb_row_fn row, void *arg)
{
    agent_host *h = agent_host_of(env);
    if (h->svc.query == NULL) {
        return HSB_EINVAL;
    }
    return h->svc.query(h->svc.arg, sql, params, n, ttl_ms, row, arg);
}

static hsb_err agent_env_write(hsb_agent_env *env, const hsb_stmt *stmt, hsb_done_fn done,
                               void *arg)
{
    agent_host *h = agent_host_of(env);
    if (h->svc.write == NULL) {
        return HSB_EINVAL;
    }
    return h->svc.write(h->svc.arg, stmt, done, arg);
}

static hsb_err agent_env_txn(hsb_agent_env *env, const hsb_stmt *stmts, size_t n, hsb_done_fn done,
                             void *arg)
{
    agent_host *h = agent_host_of(env);
    if (h->svc.txn == NULL) {
        return HSB_EINVAL;
    }
    return h->svc.txn(h->svc.arg, stmts, n, done, arg);
}

static hsb_err agent_env_audit(hsb_agent_env *env, const char *event, const char *detail)
{
    agent_host *h = agent_host_of(env);
    if (h->svc.audit == NULL) {
        return HSB_EINVAL;
    }
    return h->svc.audit(h->svc.arg, h->name, event, detail);
}

static void agent_env_log(hsb_agent_env *env, hsb_log_level level, const char *event,
                          const char *fmt, ...)
{
    agent_host *h = agent_host_of(env);
    if (h->svc.vlog == NULL) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    h->svc.vlog(h->svc.arg, level, h->name, event, fmt, ap);
    va_end(ap);
}

static uint64_t agent_env_now_ms(hsb_agent_env *env)
{
    agent_host *h = agent_host_of(env);
    if (h->svc.now_ms != NULL) {
        return h->svc.now_ms(h->svc.arg);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const char *agent_env_option(hsb_agent_env *env, const char *key)
{
    agent_host *h = agent_host_of(env);
    return h->svc.option != NULL ? h->svc.option(h->svc.arg, h->name, key) : NULL;
}

/* ---- workers ----------------------------------------------------------------------------- */

static void agent_host_handle(agent_host *h, agent_batch *b)
{
    /* The agent sees plain envelopes with this destination's delivery count. The array is on
     * the heap for big batches only. */
    hsb_envelope stack[16];
    hsb_envelope *envs = b->n <= 16 ? stack : malloc(b->n * sizeof(*envs));
    if (envs == NULL) {
        for (size_t i = 0; i < b->n; i++) {
            b->results[i] = HSB_ENOMEM;
        }
        return;
    }
    for (size_t i = 0; i < b->n; i++) {
        envs[i] = b->d[i].msg->env;
        envs[i].deliveries = b->d[i].deliveries;
        b->results[i] = HSB_OK;
    }
    uint64_t t0 = agent_host_mono_ms();
    agent_host_current = b;
    h->ops->handle_batch(h->state, &h->env, envs, b->n, b->results);
    agent_host_current = NULL;
    b->handle_ms = agent_host_mono_ms() - t0;
    if (envs != stack) {
        free(envs);
    }
}

static void *agent_host_worker(void *arg)
{
    agent_host *h = arg;
    bool first = false;

    pthread_mutex_lock(&h->lock);
    if (!h->init_done && h->threads[0] == pthread_self()) {
        first = true;
    }
    pthread_mutex_unlock(&h->lock);

    if (first) {
        hsb_err err = h->ops->init != NULL ? h->ops->init(&h->env, &h->state) : HSB_OK;
        pthread_mutex_lock(&h->lock);
        h->init_err = err;
        h->init_done = true;
        if (err != HSB_OK) {
            h->stopping = true;
        }
        pthread_cond_broadcast(&h->cond);
        pthread_mutex_unlock(&h->lock);
    }

    pthread_mutex_lock(&h->lock);
    while (!h->init_done) {
        pthread_cond_wait(&h->cond, &h->lock);
    }
    for (;;) {
        while (h->box_len == 0 && !h->stopping) {
            pthread_cond_wait(&h->cond, &h->lock);
        }
        if (h->box_len == 0) {
            break; /* stopping and the mailbox is empty */
        }
        agent_batch *b = h->box[h->box_head];
        h->box_head = (h->box_head + 1) % h->box_cap;
        h->box_len--;
        pthread_mutex_unlock(&h->lock);

        agent_host_handle(h, b);
        /* Unbounded post: the batch's size was bounded by the bus's credit. */
        if (h->svc.post(h->svc.arg, b, false) != HSB_OK) {
            agent_batch_free(b);
        }
        pthread_mutex_lock(&h->lock);
    }
    h->running--;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

hsb_err agent_host_start(const hsb_agent_ops *ops, const char *name, uint32_t workers,
                         const agent_host_services *svc, agent_host **out)
{
    if (ops == NULL || ops->abi != HSB_AGENT_ABI || ops->handle_batch == NULL || workers == 0) {
        return HSB_EINVAL;
    }
    agent_host *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        return HSB_ENOMEM;
    }
    hsb_err err = HSB_ENOMEM;
    h->ops = ops;
    h->svc = *svc;
    snprintf(h->name, sizeof(h->name), "%s", name);
    h->name_len = strlen(h->name);
    h->env = (hsb_agent_env){
        .abi = HSB_AGENT_ABI,
        .name = h->name,
        .host = h,
        .send = agent_env_send,
        .reply = agent_env_reply,
        .publish = agent_env_publish,
        .query = agent_env_query,
        .write = agent_env_write,
        .txn = agent_env_txn,
        .audit = agent_env_audit,
        .log = agent_env_log,
        .now_ms = agent_env_now_ms,
        .option = agent_env_option,
    };
    h->box_cap = 64;
    h->box = calloc(h->box_cap, sizeof(*h->box));
    h->threads = calloc(workers, sizeof(*h->threads));
    if (h->box == NULL || h->threads == NULL) {
        goto fail_alloc;
    }
    if (pthread_mutex_init(&h->lock, NULL) != 0) {
        goto fail_alloc;
    }
    if (pthread_cond_init(&h->cond, NULL) != 0) {
        goto fail_mutex;
    }

    /* Hold the lock while creating threads so the first worker sees threads[0] set. */
    pthread_mutex_lock(&h->lock);
    for (uint32_t i = 0; i < workers; i++) {
        if (pthread_create(&h->threads[i], NULL, agent_host_worker, h) != 0) {
            err = HSB_EIO;
            h->stopping = true;
            if (i == 0) {
                pthread_mutex_unlock(&h->lock);
                goto fail_cond;
            }
            break;
        }
        h->n_threads++;
        h->running++;
        char tname[16];
        snprintf(tname, sizeof(tname), "a:%.13s", name);
        pthread_setname_np(h->threads[i], tname);
    }
    while (!h->init_done) {
        pthread_cond_wait(&h->cond, &h->lock);
    }
    if (h->init_err != HSB_OK || h->stopping) {
        err = h->init_err != HSB_OK ? h->init_err : err;
        h->stopping = true;
        pthread_cond_broadcast(&h->cond);
        pthread_mutex_unlock(&h->lock);
        for (uint32_t i = 0; i < h->n_threads; i++) {
            pthread_join(h->threads[i], NULL);
        }
        if (h->init_err == HSB_OK && h->ops->fini != NULL) {
            h->ops->fini(h->state, &h->env);
        }
        goto fail_cond;
    }
    pthread_mutex_unlock(&h->lock);
    *out = h;
    return HSB_OK;

fail_cond:
    pthread_cond_destroy(&h->cond);
fail_mutex:
    pthread_mutex_destroy(&h->lock);
fail_alloc:
    free(h->threads);
    free(h->box);
    free(h);
    return err;
}

void agent_host_set_owner(agent_host *h, void *owner)
{
    h->owner = owner;
}

void *agent_host_owner(const agent_host *h)
{
    return h->owner;
}

const char *agent_host_name(const agent_host *h)
{
    return h->name;
}

hsb_agent_env *agent_host_env(agent_host *h)
{
    return &h->env;
}

hsb_err agent_host_push(agent_host *h, const bus_delivery *d, size_t n)
{
    agent_batch *b = agent_batch_new(h, n);
    if (b == NULL) {
        return HSB_ENOMEM;
    }
    memcpy(b->d, d, n * sizeof(*d));

    pthread_mutex_lock(&h->lock);
    if (h->stopping) {
        pthread_mutex_unlock(&h->lock);
        b->n = 0; /* the caller keeps its references */
        agent_batch_free(b);
        return HSB_ESHUTDOWN;
    }
    if (h->box_len == h->box_cap) {
        size_t cap = h->box_cap * 2;
        agent_batch **nb = malloc(cap * sizeof(*nb));
        if (nb == NULL) {
            pthread_mutex_unlock(&h->lock);
            b->n = 0;
            agent_batch_free(b);
            return HSB_ENOMEM;
        }
        for (size_t i = 0; i < h->box_len; i++) {
            nb[i] = h->box[(h->box_head + i) % h->box_cap];
        }
        free(h->box);
        h->box = nb;
        h->box_cap = cap;
        h->box_head = 0;
    }
    h->box[(h->box_head + h->box_len) % h->box_cap] = b;
    h->box_len++;
    pthread_cond_signal(&h->cond);
    pthread_mutex_unlock(&h->lock);
    return HSB_OK;
}

void agent_host_stop(agent_host *h)
{
    pthread_mutex_lock(&h->lock);
    h->stopping = true;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
    for (uint32_t i = 0; i < h->n_threads; i++) {
        pthread_join(h->threads[i], NULL);
    }
    h->n_threads = 0;
    if (h->ops->fini != NULL) {
        h->ops->fini(h->state, &h->env);
        h->state = NULL;
    }
}

void agent_host_free(agent_host *h)
{
    if (h == NULL) {
        return;
    }
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->lock);
    free(h->threads);
    free(h->box);
    free(h);
}
