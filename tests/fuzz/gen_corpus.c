/*
 * tests/fuzz/gen_corpus.c - writes the seed corpus of the fuzz targets: a few valid messages per
 * target, produced with the encoders, so that the fuzzers start from the real wire shapes.
 *
 * Usage: fuzz-gen-corpus DIR   (DIR is tests/fuzz/corpus; its target subdirectories must exist).
 * The generated files are committed; run this again after a wire change.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/codec.h"

static const char *gen_dir;

static void gen_write(const char *target, const char *name, const msgpack_sbuffer *sb)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s/%s.bin", gen_dir, target, name);
    f = fopen(path, "wb");
    if (f == NULL || fwrite(sb->data, 1, sb->size, f) != sb->size || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static void gen_begin(msgpack_sbuffer *sb, msgpack_packer *pk)
{
    msgpack_sbuffer_clear(sb);
    msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
}

static void gen_body(msgpack_sbuffer *body)
{
    msgpack_packer pk;

    msgpack_sbuffer_init(body);
    msgpack_packer_init(&pk, body, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "patient", 7);
    msgpack_pack_str_with_body(&pk, "p-17", 4);
    msgpack_pack_str_with_body(&pk, "values", 6);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_int32(&pk, -40000);
    msgpack_pack_double(&pk, 36.6);
    msgpack_pack_float(&pk, 1.5f);
    msgpack_pack_str_with_body(&pk, "raw", 3);
    msgpack_pack_bin_with_body(&pk, "\x00\x01\x02\x03", 4);
}

static void gen_env(hsb_envelope *e, const msgpack_sbuffer *body, int i, int broker)
{
    hsb_envelope_init(e);
    snprintf(e->to, sizeof(e->to), "%s", i == 0 ? "consent" : "");
    snprintf(e->type, sizeof(e->type), "%s", i == 1 ? "lab.result" : "");
    snprintf(e->topic, sizeof(e->topic), "%s", i == 2 ? "sys.alerts" : "");
    snprintf(e->batch, sizeof(e->batch), "ward-%d", i);
    snprintf(e->cid, sizeof(e->cid), "cid-%d", i);
    e->prio = (uint8_t)(i % 4);
    e->ttl_ms = 30000;
    e->corr = i == 3 ? 99 : 0;
    e->durable = i == 1;
    e->body = body != NULL ? (const uint8_t *)body->data : NULL;
    e->body_len = body != NULL ? body->size : 0;
    if (broker) {
        e->id = 1000 + (uint64_t)i;
        snprintf(e->from, sizeof(e->from), "anonymize");
        e->deadline = 1767225600000;
        e->deliveries = 1;
    }
}

int main(int argc, char **argv)
{
    hsb_name handles[2] = {{"consent.check"}, {"lab.*"}};
    hsb_name subs[2] = {{"sys.breaker"}, {"sys.alerts"}};
    uint64_t acks[2] = {1001, 1002};
    hsb_nack nacks[1] = {{1003, "could not parse body"}};
    hsb_send_result results[2] = {{1004, HSB_OK, NULL}, {0, HSB_ENOROUTE, "no route to x"}};
    hsb_envelope envs[4];
    msgpack_sbuffer sb, body;
    msgpack_packer pk;
    hsb_request req;
    hsb_reply rep;
    hsb_ctl_request creq;
    int i;

    if (argc != 2) {
        fprintf(stderr, "usage: fuzz-gen-corpus DIR\n");
        return 2;
    }
    gen_dir = argv[1];
    msgpack_sbuffer_init(&sb);
    gen_body(&body);

    /* fuzz_request: one of each op. */
    memset(&req, 0, sizeof(req));
    req.op = HSB_OP_HELLO;
    req.u.hello.v = HSB_PROTO_VERSION;
    strcpy(req.u.hello.agent, "research-portal");
    strcpy(req.u.hello.token, "s3cret");
    req.u.hello.handles = handles;
    req.u.hello.n_handles = 2;
    req.u.hello.subscribes = subs;
    req.u.hello.n_subscribes = 2;
    gen_begin(&sb, &pk);
    hsb_enc_request(&pk, &req);
    gen_write("fuzz_request", "hello", &sb);

    for (i = 0; i < 4; i++) {
        gen_env(&envs[i], i == 3 ? NULL : &body, i, 0);
    }
    memset(&req, 0, sizeof(req));
    req.op = HSB_OP_SEND;
    req.u.send.msgs = envs;
    req.u.send.n_msgs = 4;
    gen_begin(&sb, &pk);
    hsb_enc_request(&pk, &req);
    gen_write("fuzz_request", "send", &sb);

    memset(&req, 0, sizeof(req));
    req.op = HSB_OP_FETCH;
    req.u.fetch.max = 16;
    req.u.fetch.wait_ms = 5000;
    req.u.fetch.acks = acks;
    req.u.fetch.n_acks = 2;
    req.u.fetch.nacks = nacks;
    req.u.fetch.n_nacks = 1;
    gen_begin(&sb, &pk);
    hsb_enc_request(&pk, &req);
    gen_write("fuzz_request", "fetch", &sb);

    memset(&req, 0, sizeof(req));
    req.op = HSB_OP_BYE;
    gen_begin(&sb, &pk);
    hsb_enc_request(&pk, &req);
    gen_write("fuzz_request", "bye", &sb);

    /* fuzz_reply: each reply kind and an error reply. */
    memset(&rep, 0, sizeof(rep));
    rep.op = HSB_OP_HELLO;
    rep.ok = true;
    strcpy(rep.u.hello.session, "s-8f3a");
    rep.u.hello.max_body = HSB_BODY_MAX;
    rep.u.hello.max_batch = HSB_BATCH_MAX;
    gen_begin(&sb, &pk);
    hsb_enc_reply(&pk, &rep);
    gen_write("fuzz_reply", "hello", &sb);

    memset(&rep, 0, sizeof(rep));
    rep.op = HSB_OP_SEND;
    rep.ok = true;
    rep.u.send.results = results;
    rep.u.send.n_results = 2;
    gen_begin(&sb, &pk);
    hsb_enc_reply(&pk, &rep);
    gen_write("fuzz_reply", "send", &sb);

    for (i = 0; i < 4; i++) {
        gen_env(&envs[i], i == 3 ? NULL : &body, i, 1);
    }
    memset(&rep, 0, sizeof(rep));
    rep.op = HSB_OP_FETCH;
    rep.ok = true;
    rep.u.fetch.msgs = envs;
    rep.u.fetch.n_msgs = 4;
    gen_begin(&sb, &pk);
    hsb_enc_reply(&pk, &rep);
    gen_write("fuzz_reply", "fetch", &sb);

    memset(&rep, 0, sizeof(rep));
    rep.op = HSB_OP_BYE;
    rep.ok = true;
    gen_begin(&sb, &pk);
    hsb_enc_reply(&pk, &rep);
    gen_write("fuzz_reply", "bye", &sb);

    gen_begin(&sb, &pk);
    hsb_enc_error_reply(&pk, HSB_EAUTH, "hello first");
    gen_write("fuzz_reply", "error", &sb);

    /* fuzz_envelope: stored envelopes with and without bodies. */
    for (i = 0; i < 4; i++) {
        char name[16];
        snprintf(name, sizeof(name), "env%d", i);
        gen_begin(&sb, &pk);
        hsb_enc_envelope(&pk, &envs[i]);
        gen_write("fuzz_envelope", name, &sb);
    }

    /* fuzz_ctl_request and fuzz_ctl_reply. */
    memset(&creq, 0, sizeof(creq));
    strcpy(creq.cmd, "status");
    gen_begin(&sb, &pk);
    hsb_enc_ctl_request(&pk, &creq);
    gen_write("fuzz_ctl_request", "status", &sb);
    strcpy(creq.cmd, "breaker");
    creq.args[0] = "open";
    creq.args[1] = "echo";
    creq.n_args = 2;
    gen_begin(&sb, &pk);
    hsb_enc_ctl_request(&pk, &creq);
    gen_write("fuzz_ctl_request", "breaker", &sb);
    strcpy(creq.cmd, "dlq");
    creq.args[0] = "list";
    creq.n_args = 1;
    gen_begin(&sb, &pk);
    hsb_enc_ctl_request(&pk, &creq);
    gen_write("fuzz_ctl_request", "dlq", &sb);

    gen_begin(&sb, &pk);
    hsb_enc_ctl_reply_ok_begin(&pk);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "agents", 6);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_str_with_body(&pk, "echo", 4);
    msgpack_pack_str_with_body(&pk, "consent", 7);
    msgpack_pack_str_with_body(&pk, "uptime_s", 8);
    msgpack_pack_uint32(&pk, 86400);
    gen_write("fuzz_ctl_reply", "status", &sb);
    gen_begin(&sb, &pk);
    hsb_enc_ctl_reply_ok_begin(&pk);
    msgpack_pack_nil(&pk);
    gen_write("fuzz_ctl_reply", "nil", &sb);
    gen_begin(&sb, &pk);
    hsb_enc_ctl_reply_err(&pk, HSB_ENOTFOUND, "no breaker named x");
    gen_write("fuzz_ctl_reply", "error", &sb);

    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_destroy(&body);
    return 0;
}
