/*
 * tests/fuzz/fuzz_common.c - shared checks for the fuzz targets (see fuzz_common.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

void fuzz_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz check failed: %s\n", what);
        abort();
    }
}

uint8_t *fuzz_copy(const uint8_t *data, size_t size)
{
    uint8_t *p = malloc(size > 0 ? size : 1);

    fuzz_check(p != NULL, "malloc");
    if (size > 0) {
        memcpy(p, data, size);
    }
    return p;
}

hsb_dec *fuzz_dec(int which)
{
    static hsb_dec decs[2];
    static int ready[2];

    if (!ready[which]) {
        fuzz_check(hsb_dec_init(&decs[which]) == HSB_OK, "hsb_dec_init");
        ready[which] = 1;
    }
    return &decs[which];
}

void fuzz_check_error(const hsb_dec *dec, hsb_err err)
{
    fuzz_check(err != HSB_OK && err < HSB_ERR_COUNT, "error code in range");
    fuzz_check(dec->err == err, "dec->err matches the returned code");
    fuzz_check(hsb_dec_errmsg(dec)[0] != '\0', "error message is set");
    fuzz_check(strchr(hsb_dec_errmsg(dec), ':') != NULL, "error message names a key");
    fuzz_check(hsb_utf8_valid(hsb_dec_errmsg(dec), strlen(hsb_dec_errmsg(dec))),
               "error message is valid UTF-8 (it may go on the wire)");
}

static void fuzz_str_equal(const char *a, const char *b, const char *what)
{
    if ((a == NULL) != (b == NULL)) {
        fuzz_check(0, what);
    }
    if (a != NULL) {
        fuzz_check(strcmp(a, b) == 0, what);
    }
}

void fuzz_env_equal(const hsb_envelope *a, const hsb_envelope *b)
{
    fuzz_check(a->id == b->id, "env.id");
    fuzz_check(a->corr == b->corr, "env.corr");
    fuzz_check(a->deadline == b->deadline, "env.deadline");
    fuzz_check(a->ttl_ms == b->ttl_ms, "env.ttl_ms");
    fuzz_check(a->deliveries == b->deliveries, "env.deliveries");
    fuzz_check(a->prio == b->prio, "env.prio");
    fuzz_check(a->durable == b->durable, "env.durable");
    fuzz_str_equal(a->cid, b->cid, "env.cid");
    fuzz_str_equal(a->from, b->from, "env.from");
    fuzz_str_equal(a->to, b->to, "env.to");
    fuzz_str_equal(a->type, b->type, "env.type");
    fuzz_str_equal(a->topic, b->topic, "env.topic");
    fuzz_str_equal(a->batch, b->batch, "env.batch");
    fuzz_check(a->body_len == b->body_len, "env.body_len");
    fuzz_check((a->body == NULL) == (b->body == NULL), "env.body presence");
    if (a->body_len > 0) {
        fuzz_check(memcmp(a->body, b->body, a->body_len) == 0, "env.body bytes");
    }
}

void fuzz_request_equal(const hsb_request *a, const hsb_request *b)
{
    size_t i;

    fuzz_check(a->op == b->op, "req.op");
    switch (a->op) {
    case HSB_OP_HELLO:
        fuzz_check(a->u.hello.v == b->u.hello.v, "hello.v");
        fuzz_str_equal(a->u.hello.agent, b->u.hello.agent, "hello.agent");
        fuzz_str_equal(a->u.hello.token, b->u.hello.token, "hello.token");
        fuzz_check(a->u.hello.n_handles == b->u.hello.n_handles, "hello.n_handles");
        for (i = 0; i < a->u.hello.n_handles; i++) {
            fuzz_str_equal(a->u.hello.handles[i].s, b->u.hello.handles[i].s, "hello.handles");
        }
        fuzz_check(a->u.hello.n_subscribes == b->u.hello.n_subscribes, "hello.n_subscribes");
        for (i = 0; i < a->u.hello.n_subscribes; i++) {
            fuzz_str_equal(a->u.hello.subscribes[i].s, b->u.hello.subscribes[i].s,
                           "hello.subscribes");
        }
        break;
    case HSB_OP_SEND:
        fuzz_check(a->u.send.n_msgs == b->u.send.n_msgs, "send.n_msgs");
        for (i = 0; i < a->u.send.n_msgs; i++) {
            fuzz_env_equal(&a->u.send.msgs[i], &b->u.send.msgs[i]);
        }
        break;
    case HSB_OP_FETCH:
        fuzz_check(a->u.fetch.max == b->u.fetch.max, "fetch.max");
        fuzz_check(a->u.fetch.wait_ms == b->u.fetch.wait_ms, "fetch.wait_ms");
        fuzz_check(a->u.fetch.n_acks == b->u.fetch.n_acks, "fetch.n_acks");
        for (i = 0; i < a->u.fetch.n_acks; i++) {
            fuzz_check(a->u.fetch.acks[i] == b->u.fetch.acks[i], "fetch.acks");
        }
        fuzz_check(a->u.fetch.n_nacks == b->u.fetch.n_nacks, "fetch.n_nacks");
        for (i = 0; i < a->u.fetch.n_nacks; i++) {
            fuzz_check(a->u.fetch.nacks[i].id == b->u.fetch.nacks[i].id, "fetch.nacks.id");
            fuzz_str_equal(a->u.fetch.nacks[i].reason, b->u.fetch.nacks[i].reason,
                           "fetch.nacks.reason");
        }
        break;
    case HSB_OP_BYE:
        break;
    }
}

void fuzz_reply_equal(const hsb_reply *a, const hsb_reply *b)
{
    size_t i;

    fuzz_check(a->op == b->op, "rep.op");
    fuzz_check(a->ok == b->ok, "rep.ok");
    fuzz_check(a->err == b->err, "rep.err");
    fuzz_str_equal(a->msg, b->msg, "rep.msg");
    if (!a->ok) {
        return;
    }
    switch (a->op) {
    case HSB_OP_HELLO:
        fuzz_str_equal(a->u.hello.session, b->u.hello.session, "hello.session");
        fuzz_check(a->u.hello.max_body == b->u.hello.max_body, "hello.max_body");
        fuzz_check(a->u.hello.max_batch == b->u.hello.max_batch, "hello.max_batch");
        break;
    case HSB_OP_SEND:
        fuzz_check(a->u.send.n_results == b->u.send.n_results, "send.n_results");
        for (i = 0; i < a->u.send.n_results; i++) {
            const hsb_send_result *x = &a->u.send.results[i], *y = &b->u.send.results[i];
            fuzz_check(x->err == y->err, "result.err");
            if (x->err == HSB_OK) {
                fuzz_check(x->id == y->id, "result.id");
            } else {
                fuzz_str_equal(x->msg, y->msg, "result.msg");
            }
        }
        break;
    case HSB_OP_FETCH:
        fuzz_check(a->u.fetch.n_msgs == b->u.fetch.n_msgs, "fetch.n_msgs");
        for (i = 0; i < a->u.fetch.n_msgs; i++) {
            fuzz_env_equal(&a->u.fetch.msgs[i], &b->u.fetch.msgs[i]);
        }
        break;
    case HSB_OP_BYE:
        break;
    }
}

void fuzz_bytes_equal(const msgpack_sbuffer *a, const msgpack_sbuffer *b)
{
    fuzz_check(a->size == b->size, "re-encoding size");
    fuzz_check(a->size == 0 || memcmp(a->data, b->data, a->size) == 0, "re-encoding bytes");
}
