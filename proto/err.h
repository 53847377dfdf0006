/*
 * proto/err.h - the one error enum of hsbus and its wire names.
 *
 * Every module returns hsb_err. Codes from errno, libuv, nng and SQLite are mapped to it once, at
 * the boundary where they are received. On the wire an error is one of the eleven strings of the
 * agent protocol ("E_BADMSG", ...). Several C codes share one wire string: the decoder tells a
 * truncated input from a wrong type (so that tests and logs can be precise) while a remote peer
 * only needs to know that its message was malformed. The table in err.c is the single mapping.
 *
 * Threads: every function here is pure and may be called from any thread. None blocks.
 */
#ifndef HSB_PROTO_ERR_H
#define HSB_PROTO_ERR_H

#include <stddef.h>

typedef enum hsb_err {
    HSB_OK = 0,

    /* Malformed input. All of these travel as E_BADMSG. */
    HSB_EBADMSG,   /* Not a msgpack value we accept (bad type byte, not a map at top level). */
    HSB_ETYPE,     /* A key holds a value of the wrong type. */
    HSB_EMISSING,  /* A required key is absent. */
    HSB_EBADNAME,  /* A name is outside [a-z0-9._-]{1,64}. */
    HSB_EBADPRIO,  /* A priority is not 0..3. */
    HSB_ETRUNC,    /* The input ends inside a value. */
    HSB_ETRAILING, /* Bytes follow the top-level value. */
    HSB_EDEPTH,    /* Nesting deeper than HSB_DEPTH_MAX. */
    HSB_EUTF8,     /* A string is not valid UTF-8. */
    HSB_EBADOP,    /* Unknown request op or control command. */
    HSB_EVERSION,  /* Unsupported protocol version in hello. */
    HSB_ERANGE,    /* A number is out of its documented range. */

    /* Travel under their own wire names. */
    HSB_ETOOBIG,       /* E_TOOBIG: body, batch or request over its limit. */
    HSB_ENOROUTE,      /* E_NOROUTE: nothing matches to/type/topic. */
    HSB_EEXPIRED,      /* E_EXPIRED: deadline passed before delivery. */
    HSB_EBUSY,         /* E_BUSY: destination queue full (backpressure). */
    HSB_EBREAKER_OPEN, /* E_BREAKER_OPEN: the destination's breaker is open. */
    HSB_EAUTH,         /* E_AUTH: no hello yet, or bad token. */
    HSB_EDENIED,       /* E_DENIED: authenticated but not allowed. */
    HSB_EDUPLICATE,    /* E_DUPLICATE: a send repeated a cid already accepted. */
    HSB_ESHUTDOWN,     /* E_SHUTDOWN: the daemon is draining. */
    HSB_EINTERNAL,     /* E_INTERNAL: a bug or an unexpected system failure. */

    /* Local conditions that never reach the wire as themselves (they map to E_INTERNAL if they
     * must be reported to a peer). */
    HSB_ENOMEM,    /* Allocation failed. */
    HSB_EIO,       /* A system call or the store failed. */
    HSB_ETIMEDOUT, /* A local wait ran out (client library, store pool). */
    HSB_ECLOSED,   /* The object or connection was closed. */
    HSB_EINVAL,    /* A caller passed an invalid argument (API misuse, config value). */
    HSB_ENOTFOUND, /* A named thing does not exist (agent, dead letter, config key). */
    HSB_EDURABLE,  /* A durable send reached a broker that has no persistence attached. */

    HSB_ERR_COUNT
} hsb_err;

/*
 * hsb_err_wire returns the wire string for err ("E_BADMSG", ...), or NULL for HSB_OK. Codes without
 * a wire name of their own return "E_INTERNAL", except the malformed-input family, which returns
 * "E_BADMSG". The string is static.
 */
const char *hsb_err_wire(hsb_err err);

/*
 * hsb_err_from_wire maps a wire string of len bytes (not NUL-terminated) back to its canonical
 * code: "E_BADMSG" -> HSB_EBADMSG, "E_TOOBIG" -> HSB_ETOOBIG, and so on. An unknown string maps to
 * HSB_EINTERNAL so that a newer peer's code is never mistaken for success.
 */
hsb_err hsb_err_from_wire(const char *s, size_t len);

/* hsb_err_name returns the C name of err ("HSB_ETYPE"), for logs and test messages. Static. */
const char *hsb_err_name(hsb_err err);

/* hsb_strerror returns a short English description of err. Static. */
const char *hsb_strerror(hsb_err err);

#endif /* HSB_PROTO_ERR_H */
