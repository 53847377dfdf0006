/*
 * proto/codec_agent.c - agent protocol v1: requests (hello, send, fetch, bye) and their replies.
 *
 * Each decoder collects the keys of its map in one pass (proto_collect), then reads them in a fixed
 * order, so the first error reported does not depend on the order of keys on the wire. Keys that
 * belong to another op are treated like unknown keys: validated as values, then ignored.
 */
#include <string.h>

#include "proto/codec_int.h"

#define PROTO_HELLO_KEYS                                                                           \
    (PROTO_BIT(PROTO_K_V) | PROTO_BIT(PROTO_K_AGENT) | PROTO_BIT(PROTO_K_TOKEN) |                  \
     PROTO_BIT(PROTO_K_HANDLES) | PROTO_BIT(PROTO_K_SUBSCRIBES))
#define PROTO_SEND_KEYS (PROTO_BIT(PROTO_K_MSGS))
#define PROTO_FETCH_KEYS                                                                           \
    (PROTO_BIT(PROTO_K_MAX) | PROTO_BIT(PROTO_K_WAIT_MS) | PROTO_BIT(PROTO_K_ACKS) |               \
     PROTO_BIT(PROTO_K_NACKS))
#define PROTO_REQ_KEYS                                                                             \
    (PROTO_BIT(PROTO_K_OP) | PROTO_HELLO_KEYS | PROTO_SEND_KEYS | PROTO_FETCH_KEYS)
#define PROTO_REP_KEYS                                                                             \
    (PROTO_BIT(PROTO_K_OK) | PROTO_BIT(PROTO_K_ERR) | PROTO_BIT(PROTO_K_MSG) |                     \
     PROTO_BIT(PROTO_K_SESSION) | PROTO_BIT(PROTO_K_LIMITS) | PROTO_BIT(PROTO_K_RESULTS) |         \
     PROTO_BIT(PROTO_K_MSGS))

/*
 * proto_ignore_others validates, as unknown keys, the keys in `present` but not in `own`:
 * keys of another op (or of the other reply shape) must still be well-formed values.
 */
static hsb_err proto_ignore_others(hsb_dec *dec, const msgpack_object **s, uint64_t present,
                                   uint64_t own, int depth)
{
    uint64_t rest = present & ~own;
    int k;
    hsb_err err;

    while (rest != 0) {
        k = __builtin_ctzll(rest);
        rest &= rest - 1;
        if (s[k] != NULL) {
            proto_path p = {NULL, proto_key_name((proto_key)k), strlen(proto_key_name(k)), 0};
            err = proto_check_any(dec, &p, s[k], depth, NULL);
            if (err != HSB_OK) {
                return err;
            }
        }
    }
    return HSB_OK;
}

/* proto_get_array checks that o is an array of at most max entries. */
static hsb_err proto_get_array(hsb_dec *dec, const proto_path *at, proto_key key,
                               const msgpack_object *o, size_t max, const char *what)
{
    if (o->type != MSGPACK_OBJECT_ARRAY) {
        return proto_fail(dec, HSB_ETYPE, at, key, "must be an array of %s", what);
    }
    if (o->via.array.size > max) {
        return proto_fail(dec, HSB_ETOOBIG, at, key, "%u entries, over the limit of %zu",
                          o->via.array.size, max);
    }
    return HSB_OK;
}

/* proto_dec_names decodes a list of names (or patterns) into a zone array. */
static hsb_err proto_dec_names(hsb_dec *dec, proto_key key, const msgpack_object *o, bool pattern,
                               hsb_name **out, size_t *n_out)
{
    proto_path p = {NULL, proto_key_name(key), strlen(proto_key_name(key)), 0};
    hsb_name *names;
    uint32_t i, n;
    hsb_err err;

    err = proto_get_array(dec, NULL, key, o, HSB_LIST_MAX, "strings");
    if (err != HSB_OK) {
        return err;
    }
    n = o->via.array.size;
    if (n == 0) {
        return HSB_OK;
    }
    names = proto_zone_alloc(dec, n * sizeof(*names));
    if (names == NULL) {
        return HSB_ENOMEM;
    }
    for (i = 0; i < n; i++) {
        proto_path e = {&p, NULL, 0, i};
        err = proto_get_name(dec, &e, PROTO_K_UNKNOWN, &o->via.array.ptr[i], pattern, names[i].s);
        if (err != HSB_OK) {
            return err;
        }
    }
    *out = names;
    *n_out = n;
    return HSB_OK;
}

static hsb_err proto_dec_hello(hsb_dec *dec, const msgpack_object **s, hsb_hello *h)
{
    uint64_t v = 0;
    hsb_err err;

    if (s[PROTO_K_V] == NULL) {
        return proto_fail(dec, HSB_EMISSING, NULL, PROTO_K_V, "is required");
    }
    err = proto_get_uint(dec, NULL, PROTO_K_V, s[PROTO_K_V], UINT64_MAX, &v);
    if (err != HSB_OK) {
        return err;
    }
    if (v != HSB_PROTO_VERSION) {
        return proto_fail(dec, HSB_EVERSION, NULL, PROTO_K_V,
                          "version %llu is not supported (this broker speaks %d)",
                          (unsigned long long)v, HSB_PROTO_VERSION);
    }
    h->v = (uint32_t)v;
    if (s[PROTO_K_AGENT] == NULL) {
        return proto_fail(dec, HSB_EMISSING, NULL, PROTO_K_AGENT, "is required");
    }
    err = proto_get_name(dec, NULL, PROTO_K_AGENT, s[PROTO_K_AGENT], false, h->agent);
    if (err != HSB_OK) {
        return err;
    }
    if (s[PROTO_K_TOKEN] != NULL) {
        err = proto_get_text(dec, NULL, PROTO_K_TOKEN, s[PROTO_K_TOKEN], 0, HSB_TOKEN_MAX, false,
                             h->token);
        if (err != HSB_OK) {
            return err;
        }
    }
    if (s[PROTO_K_HANDLES] != NULL) {
        err = proto_dec_names(dec, PROTO_K_HANDLES, s[PROTO_K_HANDLES], true, &h->handles,
                              &h->n_handles);
        if (err != HSB_OK) {
            return err;
        }
    }
    if (s[PROTO_K_SUBSCRIBES] != NULL) {
        err = proto_dec_names(dec, PROTO_K_SUBSCRIBES, s[PROTO_K_SUBSCRIBES], false, &h->subscribes,
                              &h->n_subscribes);
        if (err != HSB_OK) {
            return err;
        }
    }
    return HSB_OK;
}

/* proto_dec_envs decodes the array of envelopes under key (msgs of send or of a fetch reply). */
static hsb_err proto_dec_envs(hsb_dec *dec, const msgpack_object *o, bool request,
                              hsb_envelope **out, size_t *n_out)
{
    proto_path p = {NULL, "msgs", 4, 0};
    hsb_envelope *envs;
    uint32_t i, n;
    hsb_err err;

    err = proto_get_array(dec, NULL, PROTO_K_MSGS, o, dec->max_batch, "envelopes");
    if (err != HSB_OK) {
        return err;
    }
    n = o->via.array.size;
    if (n == 0) {
        return HSB_OK;
    }
    envs = proto_zone_alloc(dec, n * sizeof(*envs));
    if (envs == NULL) {
        return HSB_ENOMEM;
    }
    for (i = 0; i < n; i++) {
        proto_path e = {&p, NULL, 0, i};
        err = proto_dec_env(dec, &e, &o->via.array.ptr[i], 3, request, &envs[i]);
        if (err != HSB_OK) {
            return err;
        }
    }
    *out = envs;
    *n_out = n;
    return HSB_OK;
}

static hsb_err proto_dec_nacks(hsb_dec *dec, const msgpack_object *o, hsb_fetch_req *f)
{
    proto_path p = {NULL, "nacks", 5, 0};
    uint32_t i, n;
    hsb_err err;

    err = proto_get_array(dec, NULL, PROTO_K_NACKS, o, HSB_LIST_MAX, "{id, reason} maps");
    if (err != HSB_OK) {
        return err;
    }
    n = o->via.array.size;
    if (n == 0) {
        return HSB_OK;
    }
    f->nacks = proto_zone_alloc(dec, n * sizeof(*f->nacks));
    if (f->nacks == NULL) {
        return HSB_ENOMEM;
    }
    for (i = 0; i < n; i++) {
        proto_path e = {&p, NULL, 0, i};
        const msgpack_object *s[PROTO_K_COUNT] = {0};
        const msgpack_object *m = &o->via.array.ptr[i];
        hsb_nack *nk = &f->nacks[i];

        memset(nk, 0, sizeof(*nk));
        if (m->type != MSGPACK_OBJECT_MAP) {
            return proto_fail(dec, HSB_ETYPE, &e, PROTO_K_UNKNOWN, "must be a map");
        }
        err = proto_collect(dec, &e, m, 3, PROTO_BIT(PROTO_K_ID) | PROTO_BIT(PROTO_K_REASON), s,
                            NULL);
        if (err != HSB_OK) {
            return err;
        }
        if (s[PROTO_K_ID] == NULL) {
            return proto_fail(dec, HSB_EMISSING, &e, PROTO_K_ID, "is required");
        }
        err = proto_get_uint(dec, &e, PROTO_K_ID, s[PROTO_K_ID], UINT64_MAX, &nk->id);
        if (err != HSB_OK) {
            return err;
        }
        if (nk->id == 0) {
            return proto_fail(dec, HSB_ERANGE, &e, PROTO_K_ID, "must not be 0");
        }
        if (s[PROTO_K_REASON] != NULL) {
            err = proto_get_text(dec, &e, PROTO_K_REASON, s[PROTO_K_REASON], 0, HSB_REASON_MAX,
                                 true, nk->reason);
            if (err != HSB_OK) {
                return err;
            }
        }
    }
    f->n_nacks = n;
    return HSB_OK;
}

static hsb_err proto_dec_fetch(hsb_dec *dec, const msgpack_object **s, hsb_fetch_req *f)
{
    proto_path p = {NULL, "acks", 4, 0};
    uint64_t u = 0;
    uint32_t i, n;
    hsb_err err;

    f->max = dec->max_batch < PROTO_FETCH_DEFAULT ? (uint32_t)dec->max_batch : PROTO_FETCH_DEFAULT;
    if (s[PROTO_K_MAX] != NULL) {
        err = proto_get_uint(dec, NULL, PROTO_K_MAX, s[PROTO_K_MAX], dec->max_batch, &u);
        if (err != HSB_OK) {
            return err;
        }
        if (u == 0) {
            return proto_fail(dec, HSB_ERANGE, NULL, PROTO_K_MAX, "must be 1..%zu", dec->max_batch);
        }
        f->max = (uint32_t)u;
    }
    if (s[PROTO_K_WAIT_MS] != NULL) {
        err = proto_get_uint(dec, NULL, PROTO_K_WAIT_MS, s[PROTO_K_WAIT_MS], PROTO_WAIT_MAX_MS, &u);
        if (err != HSB_OK) {
            return err;
        }
        f->wait_ms = (uint32_t)u;
    }
    if (s[PROTO_K_ACKS] != NULL) {
        const msgpack_object *o = s[PROTO_K_ACKS];
        err = proto_get_array(dec, NULL, PROTO_K_ACKS, o, HSB_LIST_MAX, "message ids");
        if (err != HSB_OK) {
            return err;
        }
        n = o->via.array.size;
        if (n > 0) {
            f->acks = proto_zone_alloc(dec, n * sizeof(*f->acks));
            if (f->acks == NULL) {
                return HSB_ENOMEM;
            }
            for (i = 0; i < n; i++) {
                proto_path e = {&p, NULL, 0, i};
                err = proto_get_uint(dec, &e, PROTO_K_UNKNOWN, &o->via.array.ptr[i], UINT64_MAX,
                                     &f->acks[i]);
                if (err != HSB_OK) {
                    return err;
                }
                if (f->acks[i] == 0) {
                    return proto_fail(dec, HSB_ERANGE, &e, PROTO_K_UNKNOWN, "must not be 0");
                }
            }
            f->n_acks = n;
        }
    }
    if (s[PROTO_K_NACKS] != NULL) {
        err = proto_dec_nacks(dec, s[PROTO_K_NACKS], f);
        if (err != HSB_OK) {
            return err;
        }
    }
    return HSB_OK;
}

hsb_err hsb_dec_request(hsb_dec *dec, const void *buf, size_t len, hsb_request *req)
{
    const msgpack_object *s[PROTO_K_COUNT] = {0};
    msgpack_object root;
    const msgpack_object *op;
    uint64_t present = 0;
    uint64_t own = 0;
    hsb_err err;

    /* Only the op and the part of the union that the op uses are cleared (the union is large). */
    req->op = HSB_OP_BYE;
    err = proto_unpack(dec, buf, len, &root);
    if (err != HSB_OK) {
        return err;
    }
    err = proto_collect(dec, NULL, &root, 1, PROTO_REQ_KEYS, s, &present);
    if (err != HSB_OK) {
        return err;
    }
    op = s[PROTO_K_OP];
    if (op == NULL) {
        return proto_fail(dec, HSB_EMISSING, NULL, PROTO_K_OP, "is required");
    }
    if (op->type != MSGPACK_OBJECT_STR) {
        return proto_fail(dec, HSB_ETYPE, NULL, PROTO_K_OP, "must be a string");
    }
    if (op->via.str.size == 4 && memcmp(op->via.str.ptr, "send", 4) == 0) {
        req->op = HSB_OP_SEND;
        memset(&req->u.send, 0, sizeof(req->u.send));
        own = PROTO_SEND_KEYS;
    } else if (op->via.str.size == 5 && memcmp(op->via.str.ptr, "fetch", 5) == 0) {
        req->op = HSB_OP_FETCH;
        memset(&req->u.fetch, 0, sizeof(req->u.fetch));
        own = PROTO_FETCH_KEYS;
    } else if (op->via.str.size == 5 && memcmp(op->via.str.ptr, "hello", 5) == 0) {
        req->op = HSB_OP_HELLO;
        memset(&req->u.hello, 0, sizeof(req->u.hello));
        own = PROTO_HELLO_KEYS;
    } else if (op->via.str.size == 3 && memcmp(op->via.str.ptr, "bye", 3) == 0) {
        req->op = HSB_OP_BYE;
    } else if (!hsb_utf8_valid(op->via.str.ptr, op->via.str.size)) {
        return proto_fail(dec, HSB_EUTF8, NULL, PROTO_K_OP, "string is not valid UTF-8");
    } else {
        return proto_fail(dec, HSB_EBADOP, NULL, PROTO_K_OP,
                          "unknown op (want hello, send, fetch or bye)");
    }
    err = proto_ignore_others(dec, s, present & ~PROTO_BIT(PROTO_K_OP), own, 2);
    if (err != HSB_OK) {
        return err;
    }
    switch (req->op) {
    case HSB_OP_HELLO:
        return proto_dec_hello(dec, s, &req->u.hello);
    case HSB_OP_SEND:
        if (s[PROTO_K_MSGS] == NULL) {
            return proto_fail(dec, HSB_EMISSING, NULL, PROTO_K_MSGS, "is required");
        }
        return proto_dec_envs(dec, s[PROTO_K_MSGS], true, &req->u.send.msgs, &req->u.send.n_msgs);
    case HSB_OP_FETCH:
        return proto_dec_fetch(dec, s, &req->u.fetch);
    case HSB_OP_BYE:
        break;
    }
    return HSB_OK;
}

/* ---- replies ----------------------------------------------------------------------------- */

/* proto_dec_err_fields reads err (required) and msg (optional) of a failure reply or result. */
static hsb_err proto_dec_err_fields(hsb_dec *dec, const proto_path *at, const msgpack_object *err_o,
                                    const msgpack_object *msg_o, hsb_err *code, const char **msg)
{
    const char *wire = NULL;
    hsb_err err;

    if (err_o == NULL) {
        return proto_fail(dec, HSB_EMISSING, at, PROTO_K_ERR, "is required when ok is false");
    }
    err = proto_get_text_zone(dec, at, PROTO_K_ERR, err_o, 64, false, &wire);
    if (err != HSB_OK) {
        return err;
    }
    *code = hsb_err_from_wire(wire, strlen(wire));
    if (msg_o != NULL) {
        err = proto_get_text_zone(dec, at, PROTO_K_MSG, msg_o, HSB_REASON_MAX, true, msg);
        if (err != HSB_OK) {
            return err;
        }
    }
    return HSB_OK;
}

static hsb_err proto_dec_results(hsb_dec *dec, const msgpack_object *o, hsb_reply *rep)
{
    proto_path p = {NULL, "results", 7, 0};
    hsb_send_result *res;
    uint32_t i, n;
    hsb_err err;

    err = proto_get_array(dec, NULL, PROTO_K_RESULTS, o, dec->max_batch, "result maps");
    if (err != HSB_OK) {
        return err;
    }
    n = o->via.array.size;
    if (n == 0) {
        return HSB_OK;
    }
    res = proto_zone_alloc(dec, n * sizeof(*res));
    if (res == NULL) {
        return HSB_ENOMEM;
    }
    for (i = 0; i < n; i++) {
        proto_path e = {&p, NULL, 0, i};
        const msgpack_object *s[PROTO_K_COUNT] = {0};
        const msgpack_object *m = &o->via.array.ptr[i];

        memset(&res[i], 0, sizeof(res[i]));
        if (m->type != MSGPACK_OBJECT_MAP) {
            return proto_fail(dec, HSB_ETYPE, &e, PROTO_K_UNKNOWN, "must be a map");
        }
        err = proto_collect(dec, &e, m, 3,
                            PROTO_BIT(PROTO_K_ID) | PROTO_BIT(PROTO_K_ERR) | PROTO_BIT(PROTO_K_MSG),
                            s, NULL);
        if (err != HSB_OK) {
            return err;
        }
        if (s[PROTO_K_ERR] != NULL) {
            err = proto_dec_err_fields(dec, &e, s[PROTO_K_ERR], s[PROTO_K_MSG], &res[i].err,
                                       &res[i].msg);
            if (err != HSB_OK) {
                return err;
            }
            if (s[PROTO_K_ID] != NULL) {
                err = proto_check_any(dec, &e, s[PROTO_K_ID], 4, NULL);
            }
        } else if (s[PROTO_K_ID] != NULL) {
            err = proto_get_uint(dec, &e, PROTO_K_ID, s[PROTO_K_ID], UINT64_MAX, &res[i].id);
            if (err == HSB_OK && s[PROTO_K_MSG] != NULL) {
                err = proto_check_any(dec, &e, s[PROTO_K_MSG], 4, NULL);
            }
        } else {
            err = proto_fail(dec, HSB_EMISSING, &e, PROTO_K_UNKNOWN, "needs id or err");
        }
        if (err != HSB_OK) {
            return err;
        }
    }
    rep->u.send.results = res;
    rep->u.send.n_results = n;
    return HSB_OK;
}

static hsb_err proto_dec_limits(hsb_dec *dec, const msgpack_object *o, hsb_reply *rep)
{
    proto_path p = {NULL, "limits", 6, 0};
    const msgpack_object *s[PROTO_K_COUNT] = {0};
    uint64_t u = 0;
    hsb_err err;

    if (o->type != MSGPACK_OBJECT_MAP) {
        return proto_fail(dec, HSB_ETYPE, NULL, PROTO_K_LIMITS, "must be a map");
    }
    err = proto_collect(dec, &p, o, 2, PROTO_BIT(PROTO_K_MAX_BODY) | PROTO_BIT(PROTO_K_MAX_BATCH),
                        s, NULL);
    if (err != HSB_OK) {
        return err;
    }
    if (s[PROTO_K_MAX_BODY] != NULL) {
        err = proto_get_uint(dec, &p, PROTO_K_MAX_BODY, s[PROTO_K_MAX_BODY], UINT32_MAX, &u);
        if (err != HSB_OK) {
            return err;
        }
        rep->u.hello.max_body = (uint32_t)u;
    }
    if (s[PROTO_K_MAX_BATCH] != NULL) {
        err = proto_get_uint(dec, &p, PROTO_K_MAX_BATCH, s[PROTO_K_MAX_BATCH], UINT32_MAX, &u);
        if (err != HSB_OK) {
            return err;
        }
        rep->u.hello.max_batch = (uint32_t)u;
    }
    return HSB_OK;
}

hsb_err hsb_dec_reply(hsb_dec *dec, hsb_op op, const void *buf, size_t len, hsb_reply *rep)
{
    const msgpack_object *s[PROTO_K_COUNT] = {0};
    msgpack_object root;
    uint64_t present = 0;
    uint64_t own = PROTO_BIT(PROTO_K_OK);
    hsb_err err;

    memset(rep, 0, sizeof(*rep));
    rep->op = op;
    err = proto_unpack(dec, buf, len, &root);
    if (err != HSB_OK) {
        return err;
    }
    if ((unsigned)op > HSB_OP_BYE) {
        return proto_fail(dec, HSB_EINVAL, NULL, PROTO_K_UNKNOWN, "unknown op %d", (int)op);
    }
    err = proto_collect(dec, NULL, &root, 1, PROTO_REP_KEYS, s, &present);
    if (err != HSB_OK) {
        return err;
    }
    if (s[PROTO_K_OK] == NULL) {
        return proto_fail(dec, HSB_EMISSING, NULL, PROTO_K_OK, "is required");
    }
    err = proto_get_bool(dec, NULL, PROTO_K_OK, s[PROTO_K_OK], &rep->ok);
    if (err != HSB_OK) {
        return err;
    }
    if (!rep->ok) {
        own |= PROTO_BIT(PROTO_K_ERR) | PROTO_BIT(PROTO_K_MSG);
    } else if (op == HSB_OP_HELLO) {
        own |= PROTO_BIT(PROTO_K_SESSION) | PROTO_BIT(PROTO_K_LIMITS);
    } else if (op == HSB_OP_SEND) {
        own |= PROTO_BIT(PROTO_K_RESULTS);
    } else if (op == HSB_OP_FETCH) {
        own |= PROTO_BIT(PROTO_K_MSGS);
    }
    err = proto_ignore_others(dec, s, present, own, 2);
    if (err != HSB_OK) {
        return err;
    }
    if (!rep->ok) {
        return proto_dec_err_fields(dec, NULL, s[PROTO_K_ERR], s[PROTO_K_MSG], &rep->err,
                                    &rep->msg);
    }
    switch (op) {
    case HSB_OP_HELLO:
        if (s[PROTO_K_SESSION] == NULL) {
            return proto_fail(dec, HSB_EMISSING, NULL, PROTO_K_SESSION, "is required");
        }
        err = proto_get_text(dec, NULL, PROTO_K_SESSION, s[PROTO_K_SESSION], 1, HSB_SESSION_MAX,
                             false, rep->u.hello.session);
        if (err != HSB_OK) {
            return err;
        }
        rep->u.hello.max_body = HSB_BODY_MAX;
        rep->u.hello.max_batch = HSB_BATCH_MAX;
        if (s[PROTO_K_LIMITS] != NULL) {
            return proto_dec_limits(dec, s[PROTO_K_LIMITS], rep);
        }
        break;
    case HSB_OP_SEND:
        if (s[PROTO_K_RESULTS] == NULL) {
            return proto_fail(dec, HSB_EMISSING, NULL, PROTO_K_RESULTS, "is required");
        }
        return proto_dec_results(dec, s[PROTO_K_RESULTS], rep);
    case HSB_OP_FETCH:
        if (s[PROTO_K_MSGS] == NULL) {
            return proto_fail(dec, HSB_EMISSING, NULL, PROTO_K_MSGS, "is required");
        }
        return proto_dec_envs(dec, s[PROTO_K_MSGS], false, &rep->u.fetch.msgs,
                              &rep->u.fetch.n_msgs);
    case HSB_OP_BYE:
        break;
    }
    return HSB_OK;
}

/* ---- encoders ---------------------------------------------------------------------------- */

static int proto_pack_names(msgpack_packer *pk, proto_key k, const hsb_name *names, size_t n)
{
    size_t i;
    int rc = 0;

    rc |= proto_pack_key(pk, k);
    rc |= msgpack_pack_array(pk, n);
    for (i = 0; i < n; i++) {
        rc |= proto_pack_cstr(pk, names[i].s);
    }
    return rc;
}

static int proto_enc_hello(msgpack_packer *pk, const hsb_hello *h)
{
    int rc = 0;

    rc |= msgpack_pack_map(pk,
                           3u + (h->token[0] != '\0') + (h->n_handles > 0) + (h->n_subscribes > 0));
    rc |= proto_pack_key(pk, PROTO_K_OP);
    rc |= proto_pack_cstr(pk, "hello");
    rc |= proto_pack_key(pk, PROTO_K_V);
    rc |= msgpack_pack_uint32(pk, h->v);
    rc |= proto_pack_key(pk, PROTO_K_AGENT);
    rc |= proto_pack_cstr(pk, h->agent);
    if (h->token[0] != '\0') {
        rc |= proto_pack_key(pk, PROTO_K_TOKEN);
        rc |= proto_pack_cstr(pk, h->token);
    }
    if (h->n_handles > 0) {
        rc |= proto_pack_names(pk, PROTO_K_HANDLES, h->handles, h->n_handles);
    }
    if (h->n_subscribes > 0) {
        rc |= proto_pack_names(pk, PROTO_K_SUBSCRIBES, h->subscribes, h->n_subscribes);
    }
    return rc;
}

static int proto_enc_fetch(msgpack_packer *pk, const hsb_fetch_req *f)
{
    size_t i;
    int rc = 0;

    rc |= msgpack_pack_map(pk, 1u + (f->max != 0) + (f->wait_ms != 0) + (f->n_acks > 0) +
                                   (f->n_nacks > 0));
    rc |= proto_pack_key(pk, PROTO_K_OP);
    rc |= proto_pack_cstr(pk, "fetch");
    if (f->max != 0) {
        rc |= proto_pack_key(pk, PROTO_K_MAX);
        rc |= msgpack_pack_uint32(pk, f->max);
    }
    if (f->wait_ms != 0) {
        rc |= proto_pack_key(pk, PROTO_K_WAIT_MS);
        rc |= msgpack_pack_uint32(pk, f->wait_ms);
    }
    if (f->n_acks > 0) {
        rc |= proto_pack_key(pk, PROTO_K_ACKS);
        rc |= msgpack_pack_array(pk, f->n_acks);
        for (i = 0; i < f->n_acks; i++) {
            rc |= msgpack_pack_uint64(pk, f->acks[i]);
        }
    }
    if (f->n_nacks > 0) {
        rc |= proto_pack_key(pk, PROTO_K_NACKS);
        rc |= msgpack_pack_array(pk, f->n_nacks);
        for (i = 0; i < f->n_nacks; i++) {
            bool has_reason = f->nacks[i].reason[0] != '\0';
            rc |= msgpack_pack_map(pk, has_reason ? 2 : 1);
            rc |= proto_pack_key(pk, PROTO_K_ID);
            rc |= msgpack_pack_uint64(pk, f->nacks[i].id);
            if (has_reason) {
                rc |= proto_pack_key(pk, PROTO_K_REASON);
                rc |= proto_pack_cstr(pk, f->nacks[i].reason);
            }
        }
    }
    return rc;
}

hsb_err hsb_enc_request(msgpack_packer *pk, const hsb_request *req)
{
    size_t i;
    int rc = 0;
    hsb_err err;

    switch (req->op) {
    case HSB_OP_HELLO:
        rc = proto_enc_hello(pk, &req->u.hello);
        break;
    case HSB_OP_SEND: {
        /* The head goes out in one write (see proto_wbuf in codec_int.h). */
        proto_wbuf w;

        w.len = 0;
        rc |= proto_wb_pack_map(&w, 2);
        rc |= proto_wb_pack_str(&w, 2) | proto_wb_pack_str_body(&w, "op", 2);
        rc |= proto_wb_pack_str(&w, 4) | proto_wb_pack_str_body(&w, "send", 4);
        rc |= proto_wb_pack_str(&w, 4) | proto_wb_pack_str_body(&w, "msgs", 4);
        rc |= proto_wb_pack_array(&w, req->u.send.n_msgs);
        rc |= proto_wbuf_flush(pk, &w);
        for (i = 0; i < req->u.send.n_msgs && rc == 0; i++) {
            err = hsb_enc_envelope(pk, &req->u.send.msgs[i]);
            if (err != HSB_OK) {
                return err;
            }
        }
        break;
    }
    case HSB_OP_FETCH:
        rc = proto_enc_fetch(pk, &req->u.fetch);
        break;
    case HSB_OP_BYE:
        rc |= msgpack_pack_map(pk, 1);
        rc |= proto_pack_key(pk, PROTO_K_OP);
        rc |= proto_pack_cstr(pk, "bye");
        break;
    default:
        return HSB_EINVAL;
    }
    return rc == 0 ? HSB_OK : HSB_ENOMEM;
}

hsb_err hsb_enc_error_reply(msgpack_packer *pk, hsb_err err, const char *msg)
{
    int rc = 0;

    rc |= msgpack_pack_map(pk, msg != NULL ? 3 : 2);
    rc |= proto_pack_err_fields(pk, err, msg);
    return rc == 0 ? HSB_OK : HSB_ENOMEM;
}

hsb_err hsb_enc_fetch_reply_begin(msgpack_packer *pk, size_t n)
{
    int rc = 0;

    rc |= msgpack_pack_map(pk, 2);
    rc |= proto_pack_key(pk, PROTO_K_OK);
    rc |= msgpack_pack_true(pk);
    rc |= proto_pack_key(pk, PROTO_K_MSGS);
    rc |= msgpack_pack_array(pk, n);
    return rc == 0 ? HSB_OK : HSB_ENOMEM;
}

hsb_err hsb_enc_send_reply_begin(msgpack_packer *pk, size_t n)
{
    int rc = 0;

    rc |= msgpack_pack_map(pk, 2);
    rc |= proto_pack_key(pk, PROTO_K_OK);
    rc |= msgpack_pack_true(pk);
    rc |= proto_pack_key(pk, PROTO_K_RESULTS);
    rc |= msgpack_pack_array(pk, n);
    return rc == 0 ? HSB_OK : HSB_ENOMEM;
}

hsb_err hsb_enc_send_result(msgpack_packer *pk, const hsb_send_result *res)
{
    int rc = 0;

    if (res->err == HSB_OK) {
        rc |= msgpack_pack_map(pk, 1);
        rc |= proto_pack_key(pk, PROTO_K_ID);
        rc |= msgpack_pack_uint64(pk, res->id);
    } else {
        const char *wire = hsb_err_wire(res->err);
        rc |= msgpack_pack_map(pk, res->msg != NULL ? 2 : 1);
        rc |= proto_pack_key(pk, PROTO_K_ERR);
        rc |= proto_pack_cstr(pk, wire != NULL ? wire : "E_INTERNAL");
        if (res->msg != NULL) {
            rc |= proto_pack_key(pk, PROTO_K_MSG);
            rc |= proto_pack_cstr(pk, res->msg);
        }
    }
    return rc == 0 ? HSB_OK : HSB_ENOMEM;
}

hsb_err hsb_enc_reply(msgpack_packer *pk, const hsb_reply *rep)
{
    size_t i;
    int rc = 0;
    hsb_err err = HSB_OK;

    if (!rep->ok) {
        return hsb_enc_error_reply(pk, rep->err, rep->msg);
    }
    switch (rep->op) {
    case HSB_OP_HELLO:
        rc |= msgpack_pack_map(pk, 3);
        rc |= proto_pack_key(pk, PROTO_K_OK);
        rc |= msgpack_pack_true(pk);
        rc |= proto_pack_key(pk, PROTO_K_SESSION);
        rc |= proto_pack_cstr(pk, rep->u.hello.session);
        rc |= proto_pack_key(pk, PROTO_K_LIMITS);
        rc |= msgpack_pack_map(pk, 2);
        rc |= proto_pack_key(pk, PROTO_K_MAX_BODY);
        rc |= msgpack_pack_uint32(pk, rep->u.hello.max_body);
        rc |= proto_pack_key(pk, PROTO_K_MAX_BATCH);
        rc |= msgpack_pack_uint32(pk, rep->u.hello.max_batch);
        break;
    case HSB_OP_SEND:
        err = hsb_enc_send_reply_begin(pk, rep->u.send.n_results);
        for (i = 0; i < rep->u.send.n_results && err == HSB_OK; i++) {
            err = hsb_enc_send_result(pk, &rep->u.send.results[i]);
        }
        return err;
    case HSB_OP_FETCH:
        err = hsb_enc_fetch_reply_begin(pk, rep->u.fetch.n_msgs);
        for (i = 0; i < rep->u.fetch.n_msgs && err == HSB_OK; i++) {
            err = hsb_enc_envelope(pk, &rep->u.fetch.msgs[i]);
        }
        return err;
    case HSB_OP_BYE:
        rc |= msgpack_pack_map(pk, 1);
        rc |= proto_pack_key(pk, PROTO_K_OK);
        rc |= msgpack_pack_true(pk);
        break;
    default:
        return HSB_EINVAL;
    }
    return rc == 0 ? HSB_OK : HSB_ENOMEM;
}
