/*
 * proto/err.c - the single table of hsbus error codes: C name, wire string, description.
 *
 * The table is indexed by hsb_err, so every lookup is one array access. A static assertion keeps
 * it in step with the enum: adding a code without a row does not compile.
 */
#include <string.h>

#include "proto/err.h"

typedef struct proto_err_row {
    const char *name; /* "HSB_ETYPE" */
    const char *wire; /* "E_BADMSG"; NULL for HSB_OK */
    const char *desc; /* short English description */
} proto_err_row;

static const proto_err_row proto_err_table[] = {
    [HSB_OK] = {"HSB_OK", NULL, "success"},

    [HSB_EBADMSG] = {"HSB_EBADMSG", "E_BADMSG", "malformed message"},
    [HSB_ETYPE] = {"HSB_ETYPE", "E_BADMSG", "a key holds a value of the wrong type"},
    [HSB_EMISSING] = {"HSB_EMISSING", "E_BADMSG", "a required key is missing"},
    [HSB_EBADNAME] = {"HSB_EBADNAME", "E_BADMSG", "a name is outside [a-z0-9._-]{1,64}"},
    [HSB_EBADPRIO] = {"HSB_EBADPRIO", "E_BADMSG", "priority is not 0..3"},
    [HSB_ETRUNC] = {"HSB_ETRUNC", "E_BADMSG", "message is truncated"},
    [HSB_ETRAILING] = {"HSB_ETRAILING", "E_BADMSG", "bytes follow the message"},
    [HSB_EDEPTH] = {"HSB_EDEPTH", "E_BADMSG", "message is nested too deeply"},
    [HSB_EUTF8] = {"HSB_EUTF8", "E_BADMSG", "a string is not valid UTF-8"},
    [HSB_EBADOP] = {"HSB_EBADOP", "E_BADMSG", "unknown operation or command"},
    [HSB_EVERSION] = {"HSB_EVERSION", "E_BADMSG", "unsupported protocol version"},
    [HSB_ERANGE] = {"HSB_ERANGE", "E_BADMSG", "a value is out of range"},

    [HSB_ETOOBIG] = {"HSB_ETOOBIG", "E_TOOBIG", "message or body over its size limit"},
    [HSB_ENOROUTE] = {"HSB_ENOROUTE", "E_NOROUTE", "no agent or subscriber matches"},
    [HSB_EEXPIRED] = {"HSB_EEXPIRED", "E_EXPIRED", "deadline passed before delivery"},
    [HSB_EBUSY] = {"HSB_EBUSY", "E_BUSY", "destination queue is full"},
    [HSB_EBREAKER_OPEN] = {"HSB_EBREAKER_OPEN", "E_BREAKER_OPEN",
                           "destination circuit breaker is open"},
    [HSB_EAUTH] = {"HSB_EAUTH", "E_AUTH", "not authenticated"},
    [HSB_EDENIED] = {"HSB_EDENIED", "E_DENIED", "not allowed"},
    [HSB_EDUPLICATE] = {"HSB_EDUPLICATE", "E_DUPLICATE", "duplicate cid"},
    [HSB_ESHUTDOWN] = {"HSB_ESHUTDOWN", "E_SHUTDOWN", "daemon is shutting down"},
    [HSB_EINTERNAL] = {"HSB_EINTERNAL", "E_INTERNAL", "internal error"},

    [HSB_ENOMEM] = {"HSB_ENOMEM", "E_INTERNAL", "out of memory"},
    [HSB_EIO] = {"HSB_EIO", "E_INTERNAL", "input/output error"},
    [HSB_ETIMEDOUT] = {"HSB_ETIMEDOUT", "E_INTERNAL", "timed out"},
    [HSB_ECLOSED] = {"HSB_ECLOSED", "E_INTERNAL", "object or connection closed"},
    [HSB_EINVAL] = {"HSB_EINVAL", "E_INTERNAL", "invalid argument"},
    [HSB_ENOTFOUND] = {"HSB_ENOTFOUND", "E_INTERNAL", "not found"},
    [HSB_EDURABLE] = {"HSB_EDURABLE", "E_INTERNAL", "durable send without persistence"},
};

_Static_assert(sizeof(proto_err_table) / sizeof(proto_err_table[0]) == HSB_ERR_COUNT,
               "proto_err_table must have one row per hsb_err");

/* The canonical code of each wire string, in the order of DESIGN.md. */
static const hsb_err proto_err_canonical[] = {
    HSB_EBADMSG, HSB_ETOOBIG, HSB_ENOROUTE,   HSB_EEXPIRED,  HSB_EBUSY,     HSB_EBREAKER_OPEN,
    HSB_EAUTH,   HSB_EDENIED, HSB_EDUPLICATE, HSB_ESHUTDOWN, HSB_EINTERNAL,
};

static const proto_err_row *proto_err_row_of(hsb_err err)
{
    if ((unsigned)err >= HSB_ERR_COUNT) {
        return &proto_err_table[HSB_EINTERNAL];
    }
    return &proto_err_table[err];
}

const char *hsb_err_wire(hsb_err err)
{
    return proto_err_row_of(err)->wire;
}

hsb_err hsb_err_from_wire(const char *s, size_t len)
{
    size_t i;

    if (s == NULL) {
        return HSB_EINTERNAL;
    }
    for (i = 0; i < sizeof(proto_err_canonical) / sizeof(proto_err_canonical[0]); i++) {
        const char *w = proto_err_table[proto_err_canonical[i]].wire;
        if (strlen(w) == len && memcmp(w, s, len) == 0) {
            return proto_err_canonical[i];
        }
    }
    return HSB_EINTERNAL;
}

const char *hsb_err_name(hsb_err err)
{
    if ((unsigned)err >= HSB_ERR_COUNT) {
        return "HSB_E?";
    }
    return proto_err_table[err].name;
}

const char *hsb_strerror(hsb_err err)
{
    if ((unsigned)err >= HSB_ERR_COUNT) {
        return "unknown error";
    }
    return proto_err_table[err].desc;
}
