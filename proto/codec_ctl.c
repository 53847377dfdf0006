/*
 * proto/codec_ctl.c - the control protocol: {cmd, args} requests and {ok, data | err, msg} replies.
 *
 * The codec checks the shape only: cmd is [a-z-]{1,32}, args are short UTF-8 strings. Which
 * commands exist is the daemon's command table's business; it answers an unknown one with
 * HSB_EBADOP, as the codec does for a cmd that cannot be a command name at all.
 */
#include <string.h>

#include "proto/codec_int.h"

static bool proto_cmd_valid(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len > HSB_CTL_CMD_MAX) {
        return false;
    }
    for (i = 0; i < len; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || s[i] == '-')) {
            return false;
        }
    }
    return true;
}

hsb_err hsb_dec_ctl_request(hsb_dec *dec, const void *buf, size_t len, hsb_ctl_request *req)
{
    const msgpack_object *s[PROTO_K_COUNT] = {0};
    proto_path p = {NULL, "args", 4, 0};
    msgpack_object root;
    const msgpack_object *cmd;
    const msgpack_object *args;
    uint32_t i;
    hsb_err err;

    memset(req, 0, sizeof(*req));
    err = proto_unpack(dec, buf, len, &root);
    if (err != HSB_OK) {
        return err;
    }
    err = proto_collect(dec, NULL, &root, 1, PROTO_BIT(PROTO_K_CMD) | PROTO_BIT(PROTO_K_ARGS), s,
                        NULL);
    if (err != HSB_OK) {
        return err;
    }
    cmd = s[PROTO_K_CMD];
    if (cmd == NULL) {
        return proto_fail(dec, HSB_EMISSING, NULL, PROTO_K_CMD, "is required");
    }
    if (cmd->type != MSGPACK_OBJECT_STR) {
        return proto_fail(dec, HSB_ETYPE, NULL, PROTO_K_CMD, "must be a string");
    }
    if (!proto_cmd_valid(cmd->via.str.ptr, cmd->via.str.size)) {
        if (!hsb_utf8_valid(cmd->via.str.ptr, cmd->via.str.size)) {
            return proto_fail(dec, HSB_EUTF8, NULL, PROTO_K_CMD, "string is not valid UTF-8");
        }
        return proto_fail(dec, HSB_EBADOP, NULL, PROTO_K_CMD, "must match [a-z-]{1,%d}",
                          HSB_CTL_CMD_MAX);
    }
    memcpy(req->cmd, cmd->via.str.ptr, cmd->via.str.size);
    req->cmd[cmd->via.str.size] = '\0';

    args = s[PROTO_K_ARGS];
    if (args == NULL) {
        return HSB_OK;
    }
    if (args->type != MSGPACK_OBJECT_ARRAY) {
        return proto_fail(dec, HSB_ETYPE, NULL, PROTO_K_ARGS, "must be an array of strings");
    }
    if (args->via.array.size > HSB_CTL_ARGS_MAX) {
        return proto_fail(dec, HSB_ETOOBIG, NULL, PROTO_K_ARGS,
                          "%u arguments, over the limit of %d", args->via.array.size,
                          HSB_CTL_ARGS_MAX);
    }
    for (i = 0; i < args->via.array.size; i++) {
        proto_path e = {&p, NULL, 0, i};
        err = proto_get_text_zone(dec, &e, PROTO_K_UNKNOWN, &args->via.array.ptr[i],
                                  PROTO_CTL_ARG_MAX, false, &req->args[i]);
        if (err != HSB_OK) {
            return err;
        }
    }
    req->n_args = args->via.array.size;
    return HSB_OK;
}

/*
 * proto_localize copies every string, bin and ext payload of o (a tree in dec's zone) into the
 * zone, so that o no longer refers to the input buffer.
 */
static hsb_err proto_localize(hsb_dec *dec, msgpack_object *o)
{
    const char **ptr = NULL;
    uint32_t size = 0;
    uint32_t i;
    char *copy;
    hsb_err err;

    switch (o->type) {
    case MSGPACK_OBJECT_STR:
        ptr = &o->via.str.ptr;
        size = o->via.str.size;
        break;
    case MSGPACK_OBJECT_BIN:
        ptr = &o->via.bin.ptr;
        size = o->via.bin.size;
        break;
    case MSGPACK_OBJECT_EXT:
        ptr = &o->via.ext.ptr;
        size = o->via.ext.size;
        break;
    case MSGPACK_OBJECT_ARRAY:
        for (i = 0; i < o->via.array.size; i++) {
            err = proto_localize(dec, &o->via.array.ptr[i]);
            if (err != HSB_OK) {
                return err;
            }
        }
        return HSB_OK;
    case MSGPACK_OBJECT_MAP:
        for (i = 0; i < o->via.map.size; i++) {
            err = proto_localize(dec, &o->via.map.ptr[i].key);
            if (err == HSB_OK) {
                err = proto_localize(dec, &o->via.map.ptr[i].val);
            }
            if (err != HSB_OK) {
                return err;
            }
        }
        return HSB_OK;
    default:
        return HSB_OK;
    }
    if (size == 0) {
        *ptr = "";
        return HSB_OK;
    }
    copy = msgpack_zone_malloc_no_align(&dec->zone, size);
    if (copy == NULL) {
        return proto_fail(dec, HSB_ENOMEM, NULL, PROTO_K_DATA, "out of memory");
    }
    memcpy(copy, *ptr, size);
    *ptr = copy;
    return HSB_OK;
}

hsb_err hsb_dec_ctl_reply(hsb_dec *dec, const void *buf, size_t len, hsb_ctl_reply *rep)
{
    const msgpack_object *s[PROTO_K_COUNT] = {0};
    proto_path p = {NULL, "data", 4, 0};
    msgpack_object root;
    const char *wire = NULL;
    hsb_err err;

    memset(rep, 0, sizeof(*rep));
    rep->data.type = MSGPACK_OBJECT_NIL;
    err = proto_unpack(dec, buf, len, &root);
    if (err != HSB_OK) {
        return err;
    }
    err = proto_collect(dec, NULL, &root, 1,
                        PROTO_BIT(PROTO_K_OK) | PROTO_BIT(PROTO_K_ERR) | PROTO_BIT(PROTO_K_MSG) |
                            PROTO_BIT(PROTO_K_DATA),
                        s, NULL);
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
    if (s[PROTO_K_DATA] != NULL) {
        err = proto_check_any(dec, &p, s[PROTO_K_DATA], 2, NULL);
        if (err != HSB_OK) {
            return err;
        }
    }
    if (rep->ok) {
        /* err and msg mean nothing in a success reply: validated like unknown keys. */
        if (s[PROTO_K_ERR] != NULL) {
            err = proto_check_any(dec, NULL, s[PROTO_K_ERR], 2, NULL);
        }
        if (err == HSB_OK && s[PROTO_K_MSG] != NULL) {
            err = proto_check_any(dec, NULL, s[PROTO_K_MSG], 2, NULL);
        }
        if (err != HSB_OK) {
            return err;
        }
        if (s[PROTO_K_DATA] != NULL) {
            rep->data = *s[PROTO_K_DATA];
            return proto_localize(dec, &rep->data);
        }
        return HSB_OK;
    }
    if (s[PROTO_K_ERR] == NULL) {
        return proto_fail(dec, HSB_EMISSING, NULL, PROTO_K_ERR, "is required when ok is false");
    }
    err = proto_get_text_zone(dec, NULL, PROTO_K_ERR, s[PROTO_K_ERR], 64, false, &wire);
    if (err != HSB_OK) {
        return err;
    }
    rep->err = hsb_err_from_wire(wire, strlen(wire));
    if (s[PROTO_K_MSG] != NULL) {
        return proto_get_text_zone(dec, NULL, PROTO_K_MSG, s[PROTO_K_MSG], HSB_REASON_MAX, true,
                                   &rep->msg);
    }
    return HSB_OK;
}

hsb_err hsb_enc_ctl_request(msgpack_packer *pk, const hsb_ctl_request *req)
{
    size_t n = req->n_args < HSB_CTL_ARGS_MAX ? req->n_args : HSB_CTL_ARGS_MAX;
    size_t i;
    int rc = 0;

    rc |= msgpack_pack_map(pk, n > 0 ? 2 : 1);
    rc |= proto_pack_key(pk, PROTO_K_CMD);
    rc |= proto_pack_cstr(pk, req->cmd);
    if (n > 0) {
        rc |= proto_pack_key(pk, PROTO_K_ARGS);
        rc |= msgpack_pack_array(pk, n);
        for (i = 0; i < n; i++) {
            rc |= proto_pack_cstr(pk, req->args[i] != NULL ? req->args[i] : "");
        }
    }
    return rc == 0 ? HSB_OK : HSB_ENOMEM;
}

hsb_err hsb_enc_ctl_reply_ok_begin(msgpack_packer *pk)
{
    int rc = 0;

    rc |= msgpack_pack_map(pk, 2);
    rc |= proto_pack_key(pk, PROTO_K_OK);
    rc |= msgpack_pack_true(pk);
    rc |= proto_pack_key(pk, PROTO_K_DATA);
    return rc == 0 ? HSB_OK : HSB_ENOMEM;
}

hsb_err hsb_enc_ctl_reply_err(msgpack_packer *pk, hsb_err err, const char *msg)
{
    return hsb_enc_error_reply(pk, err, msg);
}
