/*
 * tests/unit/test_proto_codec.c - agent-protocol codec: round trips of every message kind, and
 * one test per rejection path, each asserting the exact hsb_err and that the message names the key.
 *
 * Bad inputs are built by hand with msgpack_packer. A message is described as a list of (key,
 * value packer) pairs; a rejection case replaces or removes one key at one place (top level, the
 * first envelope, the first nack) and states the code and the text it expects.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/codec.h"

/* ---- helpers ----------------------------------------------------------------------------- */

typedef void (*val_fn)(msgpack_packer *pk);

typedef struct kv {
    const char *key;
    val_fn val;
} kv;

static void pk_s(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

static void pk_raw_str(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str_with_body(pk, s, n);
}

/* A rejection case: where, which key, its new value (NULL: remove the key), what to expect. */
enum where { AT_TOP, AT_ENV, AT_NACK };

typedef struct rej_case {
    const char *name;
    hsb_op op;
    enum where where;
    const char *key;
    val_fn val;
    hsb_err want;
    const char *want_msg; /* substring of the error text */
    size_t max_body;      /* 0: default */
    size_t max_batch;     /* 0: default */
} rej_case;

static const rej_case *g_case; /* the case being built; read by the nested packers */

static void pack_map(msgpack_packer *pk, const kv *defs, size_t n, enum where here)
{
    kv all[32];
    size_t m = 0, i;
    bool replaced = false;

    for (i = 0; i < n; i++) {
        if (g_case != NULL && g_case->where == here && strcmp(defs[i].key, g_case->key) == 0) {
            replaced = true;
            if (g_case->val == NULL) {
                continue;
            }
            all[m].key = defs[i].key;
            all[m++].val = g_case->val;
            continue;
        }
        all[m++] = defs[i];
    }
    if (g_case != NULL && g_case->where == here && !replaced && g_case->val != NULL) {
        all[m].key = g_case->key;
        all[m++].val = g_case->val;
    }
    msgpack_pack_map(pk, m);
    for (i = 0; i < m; i++) {
        pk_s(pk, all[i].key);
        all[i].val(pk);
    }
}

static void v_1(msgpack_packer *pk)
{
    msgpack_pack_uint8(pk, 1);
}
static void v_2(msgpack_packer *pk)
{
    msgpack_pack_uint8(pk, 2);
}
static void v_neg1(msgpack_packer *pk)
{
    msgpack_pack_int8(pk, -1);
}
static void v_0(msgpack_packer *pk)
{
    msgpack_pack_uint8(pk, 0);
}
static void v_4(msgpack_packer *pk)
{
    msgpack_pack_uint8(pk, 4);
}
static void v_true(msgpack_packer *pk)
{
    msgpack_pack_true(pk);
}
static void v_float(msgpack_packer *pk)
{
    msgpack_pack_double(pk, 1.5);
}
static void v_str_x(msgpack_packer *pk)
{
    pk_s(pk, "x");
}
static void v_map0(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 0);
}
static void v_arr_int(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_uint8(pk, 1);
}
static void v_arr_str(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    pk_s(pk, "x");
}
static void v_op_hello(msgpack_packer *pk)
{
    pk_s(pk, "hello");
}
static void v_op_send(msgpack_packer *pk)
{
    pk_s(pk, "send");
}
static void v_op_fetch(msgpack_packer *pk)
{
    pk_s(pk, "fetch");
}
static void v_op_publish(msgpack_packer *pk)
{
    pk_s(pk, "publish");
}
static void v_agent(msgpack_packer *pk)
{
    pk_s(pk, "consent");
}
static void v_token(msgpack_packer *pk)
{
    pk_s(pk, "s3cret");
}
static void v_handles(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 2);
    pk_s(pk, "consent.check");
    pk_s(pk, "lab.*");
}
static void v_subscribes(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    pk_s(pk, "sys.breaker");
}

/* Envelope fields. */
static void v_to(msgpack_packer *pk)
{
    pk_s(pk, "echo");
}
static void v_type(msgpack_packer *pk)
{
    pk_s(pk, "lab.result");
}
static void v_topic(msgpack_packer *pk)
{
    pk_s(pk, "lab.events");
}
static void v_batch(msgpack_packer *pk)
{
    pk_s(pk, "b-1");
}
static void v_cid(msgpack_packer *pk)
{
    pk_s(pk, "client-42");
}
static void v_ttl(msgpack_packer *pk)
{
    msgpack_pack_uint32(pk, 5000);
}
static void v_corr(msgpack_packer *pk)
{
    msgpack_pack_uint64(pk, 77);
}
static void v_body(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    pk_s(pk, "patient");
    pk_s(pk, "p-1");
    pk_s(pk, "values");
    msgpack_pack_array(pk, 3);
    msgpack_pack_int32(pk, -5);
    msgpack_pack_double(pk, 2.5);
    msgpack_pack_nil(pk);
}

static const kv env_defs[] = {
    {"to", v_to},  {"type", v_type},  {"topic", v_topic}, {"batch", v_batch},  {"cid", v_cid},
    {"prio", v_1}, {"ttl_ms", v_ttl}, {"corr", v_corr},   {"durable", v_true}, {"body", v_body},
};

static void v_msgs(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    pack_map(pk, env_defs, sizeof(env_defs) / sizeof(env_defs[0]), AT_ENV);
}

static void v_acks(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint64(pk, 11);
    msgpack_pack_uint64(pk, 12);
}

static void v_reason(msgpack_packer *pk)
{
    pk_s(pk, "cannot parse");
}

static void v_id13(msgpack_packer *pk)
{
    msgpack_pack_uint64(pk, 13);
}

static const kv nack_defs[] = {{"id", v_id13}, {"reason", v_reason}};

static void v_nacks(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    pack_map(pk, nack_defs, 2, AT_NACK);
}

static void v_max10(msgpack_packer *pk)
{
    msgpack_pack_uint8(pk, 10);
}
static void v_wait(msgpack_packer *pk)
{
    msgpack_pack_uint16(pk, 250);
}

static const kv hello_defs[] = {
    {"op", v_op_hello},     {"v", v_1},
    {"agent", v_agent},     {"token", v_token},
    {"handles", v_handles}, {"subscribes", v_subscribes},
};
static void v_op_bye(msgpack_packer *pk)
{
    pk_s(pk, "bye");
}
static const kv bye_defs[] = {{"op", v_op_bye}};
static const kv send_defs[] = {{"op", v_op_send}, {"msgs", v_msgs}};
static const kv fetch_defs[] = {
    {"op", v_op_fetch}, {"max", v_max10}, {"wait_ms", v_wait}, {"acks", v_acks}, {"nacks", v_nacks},
};

/* build packs the request of kind op with the case c applied (c may be NULL) into sb. */
static void build(msgpack_sbuffer *sb, hsb_op op, const rej_case *c)
{
    msgpack_packer pk;

    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    g_case = c;
    switch (op) {
    case HSB_OP_HELLO:
        pack_map(&pk, hello_defs, sizeof(hello_defs) / sizeof(hello_defs[0]), AT_TOP);
        break;
    case HSB_OP_SEND:
        pack_map(&pk, send_defs, 2, AT_TOP);
        break;
    case HSB_OP_FETCH:
        pack_map(&pk, fetch_defs, sizeof(fetch_defs) / sizeof(fetch_defs[0]), AT_TOP);
        break;
    case HSB_OP_BYE:
        pack_map(&pk, bye_defs, 1, AT_TOP);
        break;
    }
    g_case = NULL;
}

/* ---- values for rejection cases ---------------------------------------------------------- */

static void v_name_upper(msgpack_packer *pk)
{
    pk_s(pk, "Consent");
}
static void v_name_space(msgpack_packer *pk)
{
    pk_s(pk, "a b");
}
static void v_name_slash(msgpack_packer *pk)
{
    pk_s(pk, "x/y");
}
static void v_name_empty(msgpack_packer *pk)
{
    pk_s(pk, "");
}
static void v_name_65(msgpack_packer *pk)
{
    char s[66];
    memset(s, 'a', 65);
    s[65] = '\0';
    pk_s(pk, s);
}
static void v_name_bad_utf8(msgpack_packer *pk)
{
    pk_raw_str(pk, "ab\xff", 3);
}
static void v_surrogate(msgpack_packer *pk)
{
    pk_raw_str(pk, "x\xed\xa0\x80", 4); /* U+D800 */
}
static void v_text_nul(msgpack_packer *pk)
{
    pk_raw_str(pk, "ab\0c", 4);
}
static void v_map_nul_key(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    pk_raw_str(pk, "\0k", 2);
    pk_raw_str(pk, "\xff", 1);
}
static void v_pattern_star(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    pk_s(pk, "*");
}
static void v_pattern_list(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    pk_s(pk, "lab.*");
}
static void v_body_big(msgpack_packer *pk)
{
    static char bytes[200];
    msgpack_pack_bin_with_body(pk, bytes, sizeof(bytes));
}
static void v_body_1mib(msgpack_packer *pk)
{
    char *bytes = calloc(1, HSB_BODY_MAX);
    msgpack_pack_bin_with_body(pk, bytes, HSB_BODY_MAX); /* + 5 header bytes: over the limit */
    free(bytes);
}
static void v_body_bad_utf8(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 2);
    pk_s(pk, "fine");
    pk_raw_str(pk, "\xc0\xaf", 2); /* overlong '/' */
}
static void v_body_bad_key(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    pk_raw_str(pk, "k\xf5", 2);
    msgpack_pack_uint8(pk, 1);
}
static void v_nested(msgpack_packer *pk, int levels)
{
    int i;
    for (i = 0; i < levels; i++) {
        msgpack_pack_array(pk, 1);
    }
    msgpack_pack_uint8(pk, 1);
}
/* The envelope map is at depth 3 (request map, msgs array, envelope); a body of 13 arrays
 * reaches depth 16, the limit; 14 go one over. */
static void v_body_depth_ok(msgpack_packer *pk)
{
    v_nested(pk, 13);
}
static void v_body_depth_17(msgpack_packer *pk)
{
    v_nested(pk, 14);
}
static void v_deep_40(msgpack_packer *pk)
{
    v_nested(pk, 40);
}
static void v_many_msgs(msgpack_packer *pk)
{
    int i;
    msgpack_pack_array(pk, 3);
    for (i = 0; i < 3; i++) {
        msgpack_pack_map(pk, 1);
        pk_s(pk, "to");
        pk_s(pk, "echo");
    }
}
static void v_many_names(msgpack_packer *pk)
{
    int i;
    msgpack_pack_array(pk, HSB_LIST_MAX + 1);
    for (i = 0; i < HSB_LIST_MAX + 1; i++) {
        pk_s(pk, "a");
    }
}
static void v_many_acks(msgpack_packer *pk)
{
    int i;
    msgpack_pack_array(pk, HSB_LIST_MAX + 1);
    for (i = 0; i < HSB_LIST_MAX + 1; i++) {
        msgpack_pack_uint16(pk, (uint16_t)(i + 1));
    }
}
static void v_ack_zero(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_uint8(pk, 0);
}
static void v_ttl_over(msgpack_packer *pk)
{
    msgpack_pack_uint32(pk, HSB_TTL_MAX_MS + 1);
}
static void v_wait_over(msgpack_packer *pk)
{
    msgpack_pack_uint32(pk, 60001);
}
static void v_max_over(msgpack_packer *pk)
{
    msgpack_pack_uint32(pk, HSB_BATCH_MAX + 1);
}
static void v_cid_129(msgpack_packer *pk)
{
    char s[130];
    memset(s, 'c', 129);
    s[129] = '\0';
    pk_s(pk, s);
}
static void v_token_257(msgpack_packer *pk)
{
    char s[258];
    memset(s, 't', 257);
    s[257] = '\0';
    pk_s(pk, s);
}
static void v_nomap_env(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_uint8(pk, 1);
}

#define REJ(n, o, w, k, v, e, m)                                                                   \
    {                                                                                              \
        n, o, w, k, v, e, m, 0, 0                                                                  \
    }

static const rej_case rej_cases[] = {
    /* wrong types, one per key family */
    REJ("type_op", HSB_OP_BYE, AT_TOP, "op", v_1, HSB_ETYPE, "op: must be a string"),
    REJ("type_v", HSB_OP_HELLO, AT_TOP, "v", v_str_x, HSB_ETYPE, "v: must be an unsigned"),
    REJ("type_agent", HSB_OP_HELLO, AT_TOP, "agent", v_1, HSB_ETYPE, "agent: must be a string"),
    REJ("type_token", HSB_OP_HELLO, AT_TOP, "token", v_true, HSB_ETYPE, "token: must be a string"),
    REJ("type_handles", HSB_OP_HELLO, AT_TOP, "handles", v_str_x, HSB_ETYPE,
        "handles: must be an array"),
    REJ("type_handles_entry", HSB_OP_HELLO, AT_TOP, "handles", v_arr_int, HSB_ETYPE,
        "handles[0]: must be a string"),
    REJ("type_subscribes", HSB_OP_HELLO, AT_TOP, "subscribes", v_map0, HSB_ETYPE,
        "subscribes: must be an array"),
    REJ("type_msgs", HSB_OP_SEND, AT_TOP, "msgs", v_map0, HSB_ETYPE, "msgs: must be an array"),
    REJ("type_msgs_entry", HSB_OP_SEND, AT_TOP, "msgs", v_nomap_env, HSB_ETYPE,
        "msgs[0]: envelope must be a map"),
    REJ("type_env_to", HSB_OP_SEND, AT_ENV, "to", v_1, HSB_ETYPE, "msgs[0].to: must be a string"),
    REJ("type_env_type", HSB_OP_SEND, AT_ENV, "type", v_map0, HSB_ETYPE, "msgs[0].type: must be"),
    REJ("type_env_topic", HSB_OP_SEND, AT_ENV, "topic", v_true, HSB_ETYPE,
        "msgs[0].topic: must be"),
    REJ("type_env_batch", HSB_OP_SEND, AT_ENV, "batch", v_float, HSB_ETYPE,
        "msgs[0].batch: must be"),
    REJ("type_env_cid", HSB_OP_SEND, AT_ENV, "cid", v_1, HSB_ETYPE, "msgs[0].cid: must be"),
    REJ("type_env_prio", HSB_OP_SEND, AT_ENV, "prio", v_str_x, HSB_ETYPE,
        "msgs[0].prio: must be an unsigned integer"),
    REJ("type_env_ttl", HSB_OP_SEND, AT_ENV, "ttl_ms", v_float, HSB_ETYPE,
        "msgs[0].ttl_ms: must be an unsigned integer"),
    REJ("type_env_corr", HSB_OP_SEND, AT_ENV, "corr", v_str_x, HSB_ETYPE, "msgs[0].corr: must"),
    REJ("type_env_durable", HSB_OP_SEND, AT_ENV, "durable", v_1, HSB_ETYPE,
        "msgs[0].durable: must be a boolean"),
    REJ("type_fetch_max", HSB_OP_FETCH, AT_TOP, "max", v_str_x, HSB_ETYPE, "max: must be"),
    REJ("type_fetch_wait", HSB_OP_FETCH, AT_TOP, "wait_ms", v_true, HSB_ETYPE, "wait_ms: must"),
    REJ("type_fetch_acks", HSB_OP_FETCH, AT_TOP, "acks", v_1, HSB_ETYPE, "acks: must be an array"),
    REJ("type_fetch_acks_entry", HSB_OP_FETCH, AT_TOP, "acks", v_arr_str, HSB_ETYPE,
        "acks[0]: must be an unsigned"),
    REJ("type_fetch_nacks_entry", HSB_OP_FETCH, AT_TOP, "nacks", v_arr_int, HSB_ETYPE,
        "nacks[0]: must be a map"),
    REJ("type_nack_id", HSB_OP_FETCH, AT_NACK, "id", v_str_x, HSB_ETYPE, "nacks[0].id: must"),
    REJ("type_nack_reason", HSB_OP_FETCH, AT_NACK, "reason", v_1, HSB_ETYPE,
        "nacks[0].reason: must be a string"),
    /* missing required keys */
    REJ("missing_op", HSB_OP_SEND, AT_TOP, "op", NULL, HSB_EMISSING, "op: is required"),
    REJ("missing_v", HSB_OP_HELLO, AT_TOP, "v", NULL, HSB_EMISSING, "v: is required"),
    REJ("missing_agent", HSB_OP_HELLO, AT_TOP, "agent", NULL, HSB_EMISSING, "agent: is required"),
    REJ("missing_msgs", HSB_OP_SEND, AT_TOP, "msgs", NULL, HSB_EMISSING, "msgs: is required"),
    REJ("missing_nack_id", HSB_OP_FETCH, AT_NACK, "id", NULL, HSB_EMISSING,
        "nacks[0].id: is required"),
    /* bad names */
    REJ("name_agent_upper", HSB_OP_HELLO, AT_TOP, "agent", v_name_upper, HSB_EBADNAME,
        "agent: must match"),
    REJ("name_agent_empty", HSB_OP_HELLO, AT_TOP, "agent", v_name_empty, HSB_EBADNAME,
        "agent: must match"),
    REJ("name_agent_65", HSB_OP_HELLO, AT_TOP, "agent", v_name_65, HSB_EBADNAME,
        "agent: must match"),
    REJ("name_env_to", HSB_OP_SEND, AT_ENV, "to", v_name_space, HSB_EBADNAME,
        "msgs[0].to: must match"),
    REJ("name_env_type", HSB_OP_SEND, AT_ENV, "type", v_name_slash, HSB_EBADNAME,
        "msgs[0].type: must match"),
    REJ("name_env_topic", HSB_OP_SEND, AT_ENV, "topic", v_name_upper, HSB_EBADNAME,
        "msgs[0].topic: must match"),
    REJ("name_env_batch", HSB_OP_SEND, AT_ENV, "batch", v_name_65, HSB_EBADNAME,
        "msgs[0].batch: must match"),
    REJ("name_handles_star", HSB_OP_HELLO, AT_TOP, "handles", v_pattern_star, HSB_EBADNAME,
        "handles[0]: must match"),
    REJ("name_subscribes_pattern", HSB_OP_HELLO, AT_TOP, "subscribes", v_pattern_list, HSB_EBADNAME,
        "subscribes[0]: must match"),
    /* sizes */
    {"toobig_body", HSB_OP_SEND, AT_ENV, "body", v_body_big, HSB_ETOOBIG, "msgs[0].body: 202 bytes",
     100, 0},
    REJ("toobig_body_default", HSB_OP_SEND, AT_ENV, "body", v_body_1mib, HSB_ETOOBIG,
        "msgs[0].body: 1048581 bytes encoded, over the limit of 1048576"),
    {"toobig_msgs", HSB_OP_SEND, AT_TOP, "msgs", v_many_msgs, HSB_ETOOBIG,
     "msgs: 3 entries, over the limit of 2", 0, 2},
    REJ("toobig_handles", HSB_OP_HELLO, AT_TOP, "handles", v_many_names, HSB_ETOOBIG,
        "handles: 257 entries"),
    REJ("toobig_acks", HSB_OP_FETCH, AT_TOP, "acks", v_many_acks, HSB_ETOOBIG, "acks: 257"),
    /* priorities */
    REJ("prio_4", HSB_OP_SEND, AT_ENV, "prio", v_4, HSB_EBADPRIO, "msgs[0].prio: must be 0..3"),
    REJ("prio_negative", HSB_OP_SEND, AT_ENV, "prio", v_neg1, HSB_EBADPRIO,
        "msgs[0].prio: must be 0..3"),
    /* nesting */
    REJ("depth_body_17", HSB_OP_SEND, AT_ENV, "body", v_body_depth_17, HSB_EDEPTH,
        "msgs[0].body[0][0][0][0][0][0][0][0][0][0][0][0][0]: nesting deeper than 16"),
    REJ("depth_over_32", HSB_OP_BYE, AT_TOP, "x", v_deep_40, HSB_EDEPTH, "nesting deeper than 32"),
    /* UTF-8 */
    REJ("utf8_name", HSB_OP_HELLO, AT_TOP, "agent", v_name_bad_utf8, HSB_EUTF8,
        "agent: string is not valid UTF-8"),
    REJ("utf8_cid_surrogate", HSB_OP_SEND, AT_ENV, "cid", v_surrogate, HSB_EUTF8,
        "msgs[0].cid: string is not valid UTF-8"),
    REJ("utf8_body_string", HSB_OP_SEND, AT_ENV, "body", v_body_bad_utf8, HSB_EUTF8,
        "msgs[0].body[1]: string is not valid UTF-8"),
    REJ("utf8_body_map_key", HSB_OP_SEND, AT_ENV, "body", v_body_bad_key, HSB_EUTF8,
        "msgs[0].body: map key is not valid UTF-8"),
    REJ("utf8_unknown_value", HSB_OP_BYE, AT_TOP, "note", v_surrogate, HSB_EUTF8,
        "note: string is not valid UTF-8"),
    REJ("utf8_other_op_key", HSB_OP_BYE, AT_TOP, "agent", v_name_bad_utf8, HSB_EUTF8,
        "agent: string is not valid UTF-8"),
    REJ("utf8_cid_nul", HSB_OP_SEND, AT_ENV, "cid", v_text_nul, HSB_EUTF8,
        "msgs[0].cid: text must not contain NUL"),
    REJ("utf8_token_nul", HSB_OP_HELLO, AT_TOP, "token", v_text_nul, HSB_EUTF8,
        "token: text must not contain NUL"),
    /* A NUL in a peer's key must not cut the error text (found by fuzz_ctl_reply). */
    REJ("utf8_nul_key_path", HSB_OP_BYE, AT_TOP, "x", v_map_nul_key, HSB_EUTF8,
        "x.?k: string is not valid UTF-8"),
    /* op and version */
    REJ("unknown_op", HSB_OP_SEND, AT_TOP, "op", v_op_publish, HSB_EBADOP, "op: unknown op"),
    REJ("bad_version", HSB_OP_HELLO, AT_TOP, "v", v_2, HSB_EVERSION, "v: version 2"),
    REJ("bad_version_0", HSB_OP_HELLO, AT_TOP, "v", v_0, HSB_EVERSION, "v: version 0"),
    /* ranges */
    REJ("range_ttl", HSB_OP_SEND, AT_ENV, "ttl_ms", v_ttl_over, HSB_ERANGE,
        "msgs[0].ttl_ms: must be at most 604800000"),
    REJ("range_ttl_negative", HSB_OP_SEND, AT_ENV, "ttl_ms", v_neg1, HSB_ERANGE,
        "msgs[0].ttl_ms: must not be negative"),
    REJ("range_corr_negative", HSB_OP_SEND, AT_ENV, "corr", v_neg1, HSB_ERANGE,
        "msgs[0].corr: must not be negative"),
    REJ("range_wait", HSB_OP_FETCH, AT_TOP, "wait_ms", v_wait_over, HSB_ERANGE,
        "wait_ms: must be at most 60000"),
    REJ("range_max_0", HSB_OP_FETCH, AT_TOP, "max", v_0, HSB_ERANGE, "max: must be 1..1024"),
    REJ("range_max_over", HSB_OP_FETCH, AT_TOP, "max", v_max_over, HSB_ERANGE,
        "max: must be at most 1024"),
    REJ("range_ack_0", HSB_OP_FETCH, AT_TOP, "acks", v_ack_zero, HSB_ERANGE,
        "acks[0]: must not be 0"),
    REJ("range_nack_0", HSB_OP_FETCH, AT_NACK, "id", v_0, HSB_ERANGE, "nacks[0].id: must not be 0"),
    REJ("range_cid_129", HSB_OP_SEND, AT_ENV, "cid", v_cid_129, HSB_ERANGE,
        "msgs[0].cid: must be 1..128 bytes"),
    REJ("range_cid_empty", HSB_OP_SEND, AT_ENV, "cid", v_name_empty, HSB_ERANGE,
        "msgs[0].cid: must be 1..128 bytes"),
    REJ("range_token_257", HSB_OP_HELLO, AT_TOP, "token", v_token_257, HSB_ERANGE,
        "token: must be 0..256 bytes"),
    REJ("range_v_negative", HSB_OP_HELLO, AT_TOP, "v", v_neg1, HSB_ERANGE,
        "v: must not be negative"),
};

static void run_rej(void **state)
{
    const rej_case *c = *state;
    msgpack_sbuffer sb;
    hsb_dec dec;
    hsb_request req;
    hsb_err err;

    assert_int_equal(hsb_dec_init(&dec), HSB_OK);
    if (c->max_body != 0) {
        dec.max_body = c->max_body;
    }
    if (c->max_batch != 0) {
        dec.max_batch = c->max_batch;
    }
    build(&sb, c->op, c);
    err = hsb_dec_request(&dec, sb.data, sb.size, &req);
    if (err != c->want || strstr(hsb_dec_errmsg(&dec), c->want_msg) == NULL) {
        print_error("case %s: got %s \"%s\", want %s \"%s\"\n", c->name, hsb_err_name(err),
                    hsb_dec_errmsg(&dec), hsb_err_name(c->want), c->want_msg);
    }
    assert_int_equal(err, c->want);
    assert_int_equal(dec.err, c->want);
    assert_non_null(strstr(hsb_dec_errmsg(&dec), c->want_msg));
    msgpack_sbuffer_destroy(&sb);
    hsb_dec_fini(&dec);
}

/* ---- fixed rejection tests --------------------------------------------------------------- */

static hsb_err dec_bytes(const void *buf, size_t len, char *msg, size_t cap)
{
    hsb_dec dec;
    hsb_request req;
    hsb_err err;

    assert_int_equal(hsb_dec_init(&dec), HSB_OK);
    err = hsb_dec_request(&dec, buf, len, &req);
    snprintf(msg, cap, "%s", hsb_dec_errmsg(&dec));
    hsb_dec_fini(&dec);
    return err;
}

static void test_truncated_every_prefix(void **state)
{
    hsb_op ops[] = {HSB_OP_HELLO, HSB_OP_SEND, HSB_OP_FETCH, HSB_OP_BYE};
    char msg[160];
    size_t i, n;

    for (i = 0; i < 4; i++) {
        msgpack_sbuffer sb;
        build(&sb, ops[i], NULL);
        assert_int_equal(dec_bytes(sb.data, sb.size, msg, sizeof(msg)), HSB_OK);
        for (n = 0; n < sb.size; n++) {
            assert_int_equal(dec_bytes(sb.data, n, msg, sizeof(msg)), HSB_ETRUNC);
            assert_non_null(strstr(msg, "message: "));
        }
        msgpack_sbuffer_destroy(&sb);
    }
}

static void test_trailing_bytes(void **state)
{
    msgpack_sbuffer sb;
    char msg[160];

    build(&sb, HSB_OP_SEND, NULL);
    msgpack_sbuffer_write(&sb, "\xc0", 1);
    assert_int_equal(dec_bytes(sb.data, sb.size, msg, sizeof(msg)), HSB_ETRAILING);
    assert_string_equal(msg, "message: 1 bytes follow the message");
    msgpack_sbuffer_destroy(&sb);
}

static void test_not_a_map(void **state)
{
    char msg[160];

    assert_int_equal(dec_bytes("\x91\xa3"
                               "bye",
                               5, msg, sizeof(msg)),
                     HSB_EBADMSG);
    assert_string_equal(msg, "message: must be a map");
    assert_int_equal(dec_bytes("\x05", 1, msg, sizeof(msg)), HSB_EBADMSG);
    assert_int_equal(dec_bytes("\xa2hi", 3, msg, sizeof(msg)), HSB_EBADMSG);
}

static void test_invalid_type_byte(void **state)
{
    char msg[160];

    assert_int_equal(dec_bytes("\x81\xa2op\xc1", 5, msg, sizeof(msg)), HSB_EBADMSG);
    assert_non_null(strstr(msg, "invalid type byte 0xc1"));
}

static void test_huge_declared_array(void **state)
{
    char msg[160];

    /* A 4-billion-entry array in five bytes must not make msgpack-c allocate 96 GiB. */
    assert_int_equal(dec_bytes("\xdd\xff\xff\xff\xff", 5, msg, sizeof(msg)), HSB_ETRUNC);
    assert_int_equal(dec_bytes("\x81\xa1x\xdf\xff\xff\xff\xff\x01", 9, msg, sizeof(msg)),
                     HSB_ETRUNC);
}

static void test_duplicate_key(void **state)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    char msg[160];

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    pk_s(&pk, "op");
    pk_s(&pk, "bye");
    pk_s(&pk, "op");
    pk_s(&pk, "send");
    assert_int_equal(dec_bytes(sb.data, sb.size, msg, sizeof(msg)), HSB_EBADMSG);
    assert_string_equal(msg, "op: duplicate key");

    /* The same inside an envelope, which is decoded in one pass. */
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 2);
    pk_s(&pk, "op");
    pk_s(&pk, "send");
    pk_s(&pk, "msgs");
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 2);
    pk_s(&pk, "to");
    pk_s(&pk, "echo");
    pk_s(&pk, "to");
    pk_s(&pk, "audit");
    assert_int_equal(dec_bytes(sb.data, sb.size, msg, sizeof(msg)), HSB_EBADMSG);
    assert_string_equal(msg, "msgs[0].to: duplicate key");
    msgpack_sbuffer_destroy(&sb);
}

static void test_env_needs_destination(void **state)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    char msg[160];

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    pk_s(&pk, "op");
    pk_s(&pk, "send");
    pk_s(&pk, "msgs");
    msgpack_pack_array(&pk, 2);
    msgpack_pack_map(&pk, 1);
    pk_s(&pk, "to");
    pk_s(&pk, "echo");
    msgpack_pack_map(&pk, 1);
    pk_s(&pk, "prio");
    msgpack_pack_uint8(&pk, 0);
    assert_int_equal(dec_bytes(sb.data, sb.size, msg, sizeof(msg)), HSB_EMISSING);
    assert_string_equal(msg, "msgs[1]: needs one of to, type, topic or corr");
    msgpack_sbuffer_destroy(&sb);
}

/* Our limit (16) and msgpack-c's (32, reported by it as NOMEM) both become HSB_EDEPTH. */
static void test_depth_limits(void **state)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_zone zone;
    msgpack_object obj;
    size_t off = 0;
    char msg[160];
    int i;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    for (i = 0; i < 33; i++) {
        msgpack_pack_array(&pk, 1);
    }
    msgpack_pack_nil(&pk);
    msgpack_zone_init(&zone, 1024);
    assert_int_equal(msgpack_unpack(sb.data, sb.size, &off, &zone, &obj),
                     MSGPACK_UNPACK_NOMEM_ERROR);
    msgpack_zone_destroy(&zone);
    assert_int_equal(dec_bytes(sb.data, sb.size, msg, sizeof(msg)), HSB_EDEPTH);
    msgpack_sbuffer_destroy(&sb);
}

static void test_depth_16_accepted(void **state)
{
    static const rej_case ok = {"depth16", HSB_OP_SEND, AT_ENV, "body", v_body_depth_ok,
                                HSB_OK,    "",          0,      0};
    msgpack_sbuffer sb;
    char msg[160];

    build(&sb, HSB_OP_SEND, &ok);
    assert_int_equal(dec_bytes(sb.data, sb.size, msg, sizeof(msg)), HSB_OK);
    msgpack_sbuffer_destroy(&sb);
}

/* ---- acceptance ------------------------------------------------------------------------- */

static void v_unknown_nested(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    pk_s(pk, "future");
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint8(pk, 1);
    pk_s(pk, "two");
    msgpack_pack_uint8(pk, 7);
    msgpack_pack_float(pk, 1.0f);
}

static void test_unknown_keys_ignored(void **state)
{
    static const rej_case top = {"unk",  HSB_OP_SEND, AT_TOP, "x-future", v_unknown_nested,
                                 HSB_OK, "",          0,      0};
    static const rej_case env = {"unk",  HSB_OP_SEND, AT_ENV, "trace", v_unknown_nested,
                                 HSB_OK, "",          0,      0};
    hsb_dec dec;
    hsb_request req;
    msgpack_sbuffer sb;

    assert_int_equal(hsb_dec_init(&dec), HSB_OK);
    build(&sb, HSB_OP_SEND, &top);
    assert_int_equal(hsb_dec_request(&dec, sb.data, sb.size, &req), HSB_OK);
    assert_int_equal(req.u.send.n_msgs, 1);
    msgpack_sbuffer_destroy(&sb);
    build(&sb, HSB_OP_SEND, &env);
    assert_int_equal(hsb_dec_request(&dec, sb.data, sb.size, &req), HSB_OK);
    assert_string_equal(req.u.send.msgs[0].to, "echo");
    assert_string_equal(hsb_dec_errmsg(&dec), "");
    msgpack_sbuffer_destroy(&sb);
    hsb_dec_fini(&dec);
}

static void v_evil_id(msgpack_packer *pk)
{
    msgpack_pack_uint64(pk, 99);
}
static void v_evil_from(msgpack_packer *pk)
{
    pk_s(pk, "admin");
}

/* A client cannot set id, from, deadline or deliveries. */
static void test_broker_fields_zeroed(void **state)
{
    static const rej_case cases[] = {
        {"id", HSB_OP_SEND, AT_ENV, "id", v_evil_id, HSB_OK, "", 0, 0},
        {"from", HSB_OP_SEND, AT_ENV, "from", v_evil_from, HSB_OK, "", 0, 0},
        {"deadline", HSB_OP_SEND, AT_ENV, "deadline", v_evil_id, HSB_OK, "", 0, 0},
        {"deliveries", HSB_OP_SEND, AT_ENV, "deliveries", v_evil_id, HSB_OK, "", 0, 0},
    };
    hsb_dec dec;
    hsb_request req;
    size_t i;

    assert_int_equal(hsb_dec_init(&dec), HSB_OK);
    for (i = 0; i < 4; i++) {
        msgpack_sbuffer sb;
        build(&sb, HSB_OP_SEND, &cases[i]);
        assert_int_equal(hsb_dec_request(&dec, sb.data, sb.size, &req), HSB_OK);
        assert_int_equal(req.u.send.msgs[0].id, 0);
        assert_string_equal(req.u.send.msgs[0].from, "");
        assert_int_equal(req.u.send.msgs[0].deadline, 0);
        assert_int_equal(req.u.send.msgs[0].deliveries, 0);
        msgpack_sbuffer_destroy(&sb);
    }
    hsb_dec_fini(&dec);
}

/* The decoded request does not refer to the input buffer, and the zone keeps one chunk. */
static void test_input_not_referenced(void **state)
{
    msgpack_sbuffer sb, ref;
    msgpack_packer pk;
    hsb_dec dec;
    hsb_request req;
    const void *first_chunk;
    int round;

    msgpack_sbuffer_init(&ref);
    msgpack_packer_init(&pk, &ref, msgpack_sbuffer_write);
    v_body(&pk);
    assert_int_equal(hsb_dec_init(&dec), HSB_OK);
    first_chunk = dec.zone.chunk_list.head;
    for (round = 0; round < 3; round++) {
        build(&sb, HSB_OP_SEND, NULL);
        assert_int_equal(hsb_dec_request(&dec, sb.data, sb.size, &req), HSB_OK);
        memset(sb.data, 0xff, sb.size);
        msgpack_sbuffer_destroy(&sb);
        assert_int_equal(req.u.send.msgs[0].body_len, ref.size);
        assert_memory_equal(req.u.send.msgs[0].body, ref.data, ref.size);
        assert_string_equal(req.u.send.msgs[0].cid, "client-42");
        assert_ptr_equal(dec.zone.chunk_list.head, first_chunk); /* no chunk added */
    }
    hsb_dec_fini(&dec);
    msgpack_sbuffer_destroy(&ref);
}

/* ---- round trips ------------------------------------------------------------------------- */

static void env_assert_equal(const hsb_envelope *a, const hsb_envelope *b)
{
    assert_int_equal(a->id, b->id);
    assert_int_equal(a->corr, b->corr);
    assert_int_equal(a->deadline, b->deadline);
    assert_int_equal(a->ttl_ms, b->ttl_ms);
    assert_int_equal(a->deliveries, b->deliveries);
    assert_int_equal(a->prio, b->prio);
    assert_int_equal(a->durable, b->durable);
    assert_string_equal(a->cid, b->cid);
    assert_string_equal(a->from, b->from);
    assert_string_equal(a->to, b->to);
    assert_string_equal(a->type, b->type);
    assert_string_equal(a->topic, b->topic);
    assert_string_equal(a->batch, b->batch);
    assert_int_equal(a->body_len, b->body_len);
    if (a->body_len > 0) {
        assert_memory_equal(a->body, b->body, a->body_len);
    } else {
        assert_null(b->body);
    }
}

static void encode_req(msgpack_sbuffer *sb, const hsb_request *req)
{
    msgpack_packer pk;

    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    assert_int_equal(hsb_enc_request(&pk, req), HSB_OK);
}

static void test_roundtrip_hello(void **state)
{
    hsb_name handles[2] = {{"consent.check"}, {"lab.*"}};
    hsb_name subs[1] = {{"sys.breaker"}};
    hsb_request in, out;
    msgpack_sbuffer sb;
    hsb_dec dec;

    memset(&in, 0, sizeof(in));
    in.op = HSB_OP_HELLO;
    in.u.hello.v = HSB_PROTO_VERSION;
    strcpy(in.u.hello.agent, "consent");
    strcpy(in.u.hello.token, "t\xc3\xb6ken");
    in.u.hello.handles = handles;
    in.u.hello.n_handles = 2;
    in.u.hello.subscribes = subs;
    in.u.hello.n_subscribes = 1;
    encode_req(&sb, &in);
    assert_int_equal(hsb_dec_init(&dec), HSB_OK);
    assert_int_equal(hsb_dec_request(&dec, sb.data, sb.size, &out), HSB_OK);
    assert_int_equal(out.op, HSB_OP_HELLO);
    assert_int_equal(out.u.hello.v, 1);
    assert_string_equal(out.u.hello.agent, "consent");
    assert_string_equal(out.u.hello.token, "t\xc3\xb6ken");
    assert_int_equal(out.u.hello.n_handles, 2);
    assert_string_equal(out.u.hello.handles[0].s, "consent.check");
    assert_string_equal(out.u.hello.handles[1].s, "lab.*");
    assert_int_equal(out.u.hello.n_subscribes, 1);
    assert_string_equal(out.u.hello.subscribes[0].s, "sys.breaker");
    msgpack_sbuffer_destroy(&sb);
    hsb_dec_fini(&dec);
}

static void make_body(msgpack_sbuffer *sb, int variant)
{
    msgpack_packer pk;

    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    switch (variant) {
    case 0:
        v_body(&pk);
        break;
    case 1:
        msgpack_pack_bin_with_body(&pk, "\x00\x01\x02", 3);
        break;
    default:
        msgpack_pack_ext_with_body(&pk, "abcd", 4, 5);
        break;
    }
}

static void fill_env(hsb_envelope *e, int i, const msgpack_sbuffer *body, bool broker)
{
    hsb_envelope_init(e);
    snprintf(e->cid, sizeof(e->cid), "cid-%d", i);
    snprintf(e->to, sizeof(e->to), "agent-%d", i);
    snprintf(e->type, sizeof(e->type), "lab.type%d", i);
    snprintf(e->topic, sizeof(e->topic), "topic.%d", i);
    snprintf(e->batch, sizeof(e->batch), "batch_%d", i);
    e->prio = (uint8_t)(i % 4);
    e->ttl_ms = 1000u * (uint32_t)(i + 1);
    e->corr = UINT64_MAX - (uint64_t)i;
    e->durable = (i % 2) == 0;
    e->body = (const uint8_t *)body->data;
    e->body_len = body->size;
    if (broker) {
        e->id = 1000 + (uint64_t)i;
        snprintf(e->from, sizeof(e->from), "sender-%d", i);
        e->deadline = 1700000000000 + i;
        e->deliveries = (uint32_t)i + 1;
    }
}

static void test_roundtrip_send(void **state)
{
    msgpack_sbuffer bodies[3];
    hsb_envelope envs[4];
    hsb_request in, out;
    msgpack_sbuffer sb;
    hsb_dec dec;
    int i;

    for (i = 0; i < 3; i++) {
        make_body(&bodies[i], i);
        fill_env(&envs[i], i, &bodies[i], false);
    }
    hsb_envelope_init(&envs[3]); /* minimal: a reply with a nil body */
    envs[3].corr = 5;
    memset(&in, 0, sizeof(in));
    in.op = HSB_OP_SEND;
    in.u.send.msgs = envs;
    in.u.send.n_msgs = 4;
    encode_req(&sb, &in);
    assert_int_equal(hsb_dec_init(&dec), HSB_OK);
    assert_int_equal(hsb_dec_request(&dec, sb.data, sb.size, &out), HSB_OK);
    assert_int_equal(out.op, HSB_OP_SEND);
    assert_int_equal(out.u.send.n_msgs, 4);
    for (i = 0; i < 4; i++) {
        env_assert_equal(&envs[i], &out.u.send.msgs[i]);
    }
    assert_int_equal(out.u.send.msgs[3].prio, HSB_PRIO_NORMAL);
    msgpack_sbuffer_destroy(&sb);
    for (i = 0; i < 3; i++) {
        msgpack_sbuffer_destroy(&bodies[i]);
    }
    hsb_dec_fini(&dec);
}

static void test_roundtrip_fetch_and_bye(void **state)
{
    uint64_t acks[3] = {1, 2, UINT64_MAX};
    hsb_nack nacks[2] = {{9, "bad input"}, {10, ""}};
    hsb_request in, out;
    msgpack_sbuffer sb;
    hsb_dec dec;

    memset(&in, 0, sizeof(in));
    in.op = HSB_OP_FETCH;
    in.u.fetch.max = 32;
    in.u.fetch.wait_ms = 60000;
    in.u.fetch.acks = acks;
    in.u.fetch.n_acks = 3;
    in.u.fetch.nacks = nacks;
    in.u.fetch.n_nacks = 2;
    encode_req(&sb, &in);
    assert_int_equal(hsb_dec_init(&dec), HSB_OK);
    assert_int_equal(hsb_dec_request(&dec, sb.data, sb.size, &out), HSB_OK);
    assert_int_equal(out.op, HSB_OP_FETCH);
    assert_int_equal(out.u.fetch.max, 32);
    assert_int_equal(out.u.fetch.wait_ms, 60000);
    assert_int_equal(out.u.fetch.n_acks, 3);
    assert_memory_equal(out.u.fetch.acks, acks, sizeof(acks));
    assert_int_equal(out.u.fetch.n_nacks, 2);
    assert_int_equal(out.u.fetch.nacks[0].id, 9);
    assert_string_equal(out.u.fetch.nacks[0].reason, "bad input");
    assert_int_equal(out.u.fetch.nacks[1].id, 10);
    assert_string_equal(out.u.fetch.nacks[1].reason, "");
    msgpack_sbuffer_destroy(&sb);

    /* Defaults: max 64, wait 0. */
    memset(&in, 0, sizeof(in));
    in.op = HSB_OP_FETCH;
    encode_req(&sb, &in);
    assert_int_equal(hsb_dec_request(&dec, sb.data, sb.size, &out), HSB_OK);
    assert_int_equal(out.u.fetch.max, 64);
    assert_int_equal(out.u.fetch.wait_ms, 0);
    assert_int_equal(out.u.fetch.n_acks, 0);
    msgpack_sbuffer_destroy(&sb);

    memset(&in, 0, sizeof(in));
    in.op = HSB_OP_BYE;
    encode_req(&sb, &in);
    assert_int_equal(sb.size, 8); /* {"op": "bye"} */
    assert_int_equal(hsb_dec_request(&dec, sb.data, sb.size, &out), HSB_OK);
    assert_int_equal(out.op, HSB_OP_BYE);
    msgpack_sbuffer_destroy(&sb);
    hsb_dec_fini(&dec);
}

static void encode_rep(msgpack_sbuffer *sb, const hsb_reply *rep)
{
    msgpack_packer pk;

    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    assert_int_equal(hsb_enc_reply(&pk, rep), HSB_OK);
}

static void test_roundtrip_replies(void **state)
{
    hsb_send_result results[3] = {
        {42, HSB_OK, NULL}, {0, HSB_ENOROUTE, "no agent handles lab.x"}, {0, HSB_EBUSY, NULL}};
    msgpack_sbuffer body;
    hsb_envelope envs[2];
    hsb_reply in, out;
    msgpack_sbuffer sb;
    hsb_dec dec;
    int i;

    assert_int_equal(hsb_dec_init(&dec), HSB_OK);

    memset(&in, 0, sizeof(in));
    in.op = HSB_OP_HELLO;
    in.ok = true;
    strcpy(in.u.hello.session, "s-0123456789abcdef");
    in.u.hello.max_body = 4096;
    in.u.hello.max_batch = 128;
    encode_rep(&sb, &in);
    assert_int_equal(hsb_dec_reply(&dec, HSB_OP_HELLO, sb.data, sb.size, &out), HSB_OK);
    assert_true(out.ok);
    assert_int_equal(out.err, HSB_OK);
    assert_null(out.msg);
    assert_string_equal(out.u.hello.session, "s-0123456789abcdef");
    assert_int_equal(out.u.hello.max_body, 4096);
    assert_int_equal(out.u.hello.max_batch, 128);
    msgpack_sbuffer_destroy(&sb);

    memset(&in, 0, sizeof(in));
    in.op = HSB_OP_SEND;
    in.ok = true;
    in.u.send.results = results;
    in.u.send.n_results = 3;
    encode_rep(&sb, &in);
    assert_int_equal(hsb_dec_reply(&dec, HSB_OP_SEND, sb.data, sb.size, &out), HSB_OK);
    assert_int_equal(out.u.send.n_results, 3);
    assert_int_equal(out.u.send.results[0].id, 42);
    assert_int_equal(out.u.send.results[0].err, HSB_OK);
    assert_null(out.u.send.results[0].msg);
    assert_int_equal(out.u.send.results[1].err, HSB_ENOROUTE);
    assert_string_equal(out.u.send.results[1].msg, "no agent handles lab.x");
    assert_int_equal(out.u.send.results[2].err, HSB_EBUSY);
    assert_null(out.u.send.results[2].msg);
    msgpack_sbuffer_destroy(&sb);

    make_body(&body, 0);
    memset(&in, 0, sizeof(in));
    in.op = HSB_OP_FETCH;
    in.ok = true;
    fill_env(&envs[0], 0, &body, true);
    fill_env(&envs[1], 1, &body, true);
    envs[1].body = NULL;
    envs[1].body_len = 0;
    in.u.fetch.msgs = envs;
    in.u.fetch.n_msgs = 2;
    encode_rep(&sb, &in);
    assert_int_equal(hsb_dec_reply(&dec, HSB_OP_FETCH, sb.data, sb.size, &out), HSB_OK);
    assert_int_equal(out.u.fetch.n_msgs, 2);
    for (i = 0; i < 2; i++) {
        env_assert_equal(&envs[i], &out.u.fetch.msgs[i]); /* broker fields kept */
    }
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_destroy(&body);

    memset(&in, 0, sizeof(in));
    in.op = HSB_OP_BYE;
    in.ok = true;
    encode_rep(&sb, &in);
    assert_int_equal(hsb_dec_reply(&dec, HSB_OP_BYE, sb.data, sb.size, &out), HSB_OK);
    assert_true(out.ok);
    msgpack_sbuffer_destroy(&sb);

    /* An error reply to any op. */
    memset(&in, 0, sizeof(in));
    in.op = HSB_OP_FETCH;
    in.ok = false;
    in.err = HSB_EAUTH;
    in.msg = "hello first";
    encode_rep(&sb, &in);
    assert_int_equal(hsb_dec_reply(&dec, HSB_OP_FETCH, sb.data, sb.size, &out), HSB_OK);
    assert_false(out.ok);
    assert_int_equal(out.err, HSB_EAUTH);
    assert_string_equal(out.msg, "hello first");
    msgpack_sbuffer_destroy(&sb);

    /* Malformed-family codes travel as E_BADMSG and come back as HSB_EBADMSG. */
    {
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        assert_int_equal(hsb_enc_error_reply(&pk, HSB_EBADPRIO, "msgs[0].prio: must be 0..3"),
                         HSB_OK);
        assert_int_equal(hsb_dec_reply(&dec, HSB_OP_SEND, sb.data, sb.size, &out), HSB_OK);
        assert_false(out.ok);
        assert_int_equal(out.err, HSB_EBADMSG);
        assert_string_equal(out.msg, "msgs[0].prio: must be 0..3");
        msgpack_sbuffer_destroy(&sb);
    }
    hsb_dec_fini(&dec);
}

static void test_roundtrip_envelope(void **state)
{
    msgpack_sbuffer body, sb;
    msgpack_packer pk;
    hsb_envelope in, out;
    hsb_dec dec;

    make_body(&body, 2);
    fill_env(&in, 3, &body, true);
    in.deadline = INT64_MAX;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(hsb_enc_envelope(&pk, &in), HSB_OK);
    assert_int_equal(hsb_dec_init(&dec), HSB_OK);
    assert_int_equal(hsb_dec_envelope(&dec, sb.data, sb.size, &out), HSB_OK);
    env_assert_equal(&in, &out);
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_destroy(&body);
    hsb_dec_fini(&dec);
}

static void test_reply_rejections(void **state)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    hsb_dec dec;
    hsb_reply rep;

    assert_int_equal(hsb_dec_init(&dec), HSB_OK);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);

    msgpack_pack_map(&pk, 1); /* {} without ok */
    pk_s(&pk, "session");
    pk_s(&pk, "s");
    assert_int_equal(hsb_dec_reply(&dec, HSB_OP_HELLO, sb.data, sb.size, &rep), HSB_EMISSING);
    assert_string_equal(hsb_dec_errmsg(&dec), "ok: is required");

    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 1); /* ok: 1 */
    pk_s(&pk, "ok");
    msgpack_pack_uint8(&pk, 1);
    assert_int_equal(hsb_dec_reply(&dec, HSB_OP_BYE, sb.data, sb.size, &rep), HSB_ETYPE);
    assert_string_equal(hsb_dec_errmsg(&dec), "ok: must be a boolean");

    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 1); /* ok: false without err */
    pk_s(&pk, "ok");
    msgpack_pack_false(&pk);
    assert_int_equal(hsb_dec_reply(&dec, HSB_OP_BYE, sb.data, sb.size, &rep), HSB_EMISSING);
    assert_non_null(strstr(hsb_dec_errmsg(&dec), "err: is required"));

    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 2); /* results[0] with neither id nor err */
    pk_s(&pk, "ok");
    msgpack_pack_true(&pk);
    pk_s(&pk, "results");
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 0);
    assert_int_equal(hsb_dec_reply(&dec, HSB_OP_SEND, sb.data, sb.size, &rep), HSB_EMISSING);
    assert_string_equal(hsb_dec_errmsg(&dec), "results[0]: needs id or err");

    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 2); /* fetch reply envelope with a bad from */
    pk_s(&pk, "ok");
    msgpack_pack_true(&pk);
    pk_s(&pk, "msgs");
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 2);
    pk_s(&pk, "to");
    pk_s(&pk, "me");
    pk_s(&pk, "from");
    pk_s(&pk, "Bad Name");
    assert_int_equal(hsb_dec_reply(&dec, HSB_OP_FETCH, sb.data, sb.size, &rep), HSB_EBADNAME);
    assert_non_null(strstr(hsb_dec_errmsg(&dec), "msgs[0].from: must match"));

    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 1); /* hello reply without session */
    pk_s(&pk, "ok");
    msgpack_pack_true(&pk);
    assert_int_equal(hsb_dec_reply(&dec, HSB_OP_HELLO, sb.data, sb.size, &rep), HSB_EMISSING);
    assert_string_equal(hsb_dec_errmsg(&dec), "session: is required");

    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 3); /* an unknown error string maps to E_INTERNAL */
    pk_s(&pk, "ok");
    msgpack_pack_false(&pk);
    pk_s(&pk, "err");
    pk_s(&pk, "E_FROM_THE_FUTURE");
    pk_s(&pk, "msg");
    pk_s(&pk, "?");
    assert_int_equal(hsb_dec_reply(&dec, HSB_OP_BYE, sb.data, sb.size, &rep), HSB_OK);
    assert_int_equal(rep.err, HSB_EINTERNAL);

    msgpack_sbuffer_destroy(&sb);
    hsb_dec_fini(&dec);
}

/* Encoders report a failing write callback as HSB_ENOMEM. */
static int failing_write(void *data, const char *buf, size_t len)
{
    return -1;
}

static void test_encoder_write_failure(void **state)
{
    msgpack_packer pk;
    hsb_request req;
    hsb_envelope env;

    msgpack_packer_init(&pk, NULL, failing_write);
    memset(&req, 0, sizeof(req));
    req.op = HSB_OP_BYE;
    assert_int_equal(hsb_enc_request(&pk, &req), HSB_ENOMEM);
    hsb_envelope_init(&env);
    strcpy(env.to, "echo");
    assert_int_equal(hsb_enc_envelope(&pk, &env), HSB_ENOMEM);
    assert_int_equal(hsb_enc_error_reply(&pk, HSB_EBUSY, "full"), HSB_ENOMEM);
}

static void test_op_names(void **state)
{
    assert_string_equal(hsb_op_name(HSB_OP_HELLO), "hello");
    assert_string_equal(hsb_op_name(HSB_OP_SEND), "send");
    assert_string_equal(hsb_op_name(HSB_OP_FETCH), "fetch");
    assert_string_equal(hsb_op_name(HSB_OP_BYE), "bye");
}

#define N_REJ (sizeof(rej_cases) / sizeof(rej_cases[0]))

/* hsb_enc_envelope_bound is an upper bound for the largest envelope (every field at its
 * widest) and for the smallest, and stays close to the exact size. */
static void test_envelope_bound(void **state)
{
    static uint8_t body[300];
    hsb_envelope env;
    msgpack_sbuffer sb;
    msgpack_packer pk;

    (void)state;
    for (int full = 0; full <= 1; full++) {
        hsb_envelope_init(&env);
        env.prio = 2;
        snprintf(env.to, sizeof(env.to), "a");
        if (full) {
            env.id = UINT64_MAX;
            env.corr = UINT64_MAX;
            env.deadline = INT64_MIN;
            env.ttl_ms = UINT32_MAX;
            env.deliveries = UINT32_MAX;
            env.durable = true;
            memset(env.cid, 'c', HSB_CID_MAX);
            memset(env.from, 'f', HSB_NAME_MAX);
            memset(env.to, 't', HSB_NAME_MAX);
            memset(env.type, 'y', HSB_NAME_MAX);
            memset(env.topic, 'p', HSB_NAME_MAX);
            memset(env.batch, 'b', HSB_NAME_MAX);
            body[0] = 0xc5; /* bin16 of 297 bytes */
            body[1] = 0x01;
            body[2] = 0x29;
            env.body = body;
            env.body_len = sizeof(body);
        }
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        assert_int_equal(hsb_enc_envelope(&pk, &env), HSB_OK);
        assert_true(sb.size <= hsb_enc_envelope_bound(&env));
        assert_true(hsb_enc_envelope_bound(&env) - sb.size < 300);
        msgpack_sbuffer_destroy(&sb);
    }
}

int main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_truncated_every_prefix),
        cmocka_unit_test(test_envelope_bound),
        cmocka_unit_test(test_trailing_bytes),
        cmocka_unit_test(test_not_a_map),
        cmocka_unit_test(test_invalid_type_byte),
        cmocka_unit_test(test_huge_declared_array),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_env_needs_destination),
        cmocka_unit_test(test_depth_limits),
        cmocka_unit_test(test_depth_16_accepted),
        cmocka_unit_test(test_unknown_keys_ignored),
        cmocka_unit_test(test_broker_fields_zeroed),
        cmocka_unit_test(test_input_not_referenced),
        cmocka_unit_test(test_roundtrip_hello),
        cmocka_unit_test(test_roundtrip_send),
        cmocka_unit_test(test_roundtrip_fetch_and_bye),
        cmocka_unit_test(test_roundtrip_replies),
        cmocka_unit_test(test_roundtrip_envelope),
        cmocka_unit_test(test_reply_rejections),
        cmocka_unit_test(test_encoder_write_failure),
        cmocka_unit_test(test_op_names),
    };
    static struct CMUnitTest tests[sizeof(fixed) / sizeof(fixed[0]) + N_REJ];
    static char names[N_REJ][64];
    size_t i, nf = sizeof(fixed) / sizeof(fixed[0]);

    for (i = 0; i < nf; i++) {
        tests[i] = fixed[i];
    }
    for (i = 0; i < N_REJ; i++) {
        snprintf(names[i], sizeof(names[i]), "reject_%s", rej_cases[i].name);
        tests[nf + i].name = names[i];
        tests[nf + i].test_func = run_rej;
        tests[nf + i].setup_func = NULL;
        tests[nf + i].teardown_func = NULL;
        tests[nf + i].initial_state = (void *)&rej_cases[i];
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
