/*
 * daemon/sp_ipc.h - the REP side of nng's REQ/REP wire protocol on a Unix socket, on the loop
 * thread (libuv), for the gateway's ipc:// listener.
 *
 * Why: with nng's REP socket every request crosses four threads before the loop sees it (nng's
 * poller, a task thread for the pipe, a task thread for the context, the inbox) and every reply
 * two more. On this 2-core machine class those hand-offs, not the broker's work, were most of the
 * daemon's time (docs/rationale.md, "The ipc listener runs on the loop thread"). This module reads
 * and writes the same bytes as nng's ipc transport and REP protocol, so every REQ client (libhsbus,
 * pynng, mangos, any nng version) works unchanged; tcp:// and tls+tcp:// stay with nng.
 *
 * Wire (as nng 1.x): each side first sends 8 bytes {0, 'S', 'P', 0, proto (u16 BE), 0, 0}; REP is
 * 0x31 and its peer must be REQ, 0x30. Then each message is the byte 1, a u64 BE length, and that
 * many bytes: the REQ backtrace (u32 BE words, the last with its high bit set, at most 8) followed
 * by the body. A reply carries the request's backtrace in front of its body. A message longer than
 * max_msg, a bad handshake or a bad type byte closes the connection (nng does the same); a request
 * with a malformed backtrace is dropped.
 *
 * Flow control: when the request handler refuses a request (no context free), or a connection's
 * unsent replies pass a bound because its peer does not read, the connection stops reading; the
 * kernel's socket buffer then pushes back on the client. sp_server_kick resumes refused ones.
 *
 * Ownership: the server owns its connections. A connection stays allocated while the caller holds
 * references (sp_conn_ref) or its handle is open; after it closed, replies to it are dropped.
 * Threads: every function runs on the loop thread, and the handlers are called there. Nothing
 * blocks except sp_server_listen (a connect() probe of a leftover socket file, and bind()).
 */
#ifndef HSB_DAEMON_SP_IPC_H
#define HSB_DAEMON_SP_IPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "proto/err.h"

#define SP_BACKTRACE_MAX 32 /* 8 hops of 4 bytes, as nng's REP */

typedef struct sp_server sp_server;
typedef struct sp_conn sp_conn;

typedef struct sp_handlers {
    /*
     * request: one complete request. bt (the backtrace, to be echoed in the reply) and body point
     * into the connection's read buffer and are valid only during the call. Return false to refuse
     * it for now: the connection stops reading and the same request is offered again after
     * sp_server_kick.
     */
    bool (*request)(void *arg, sp_conn *c, const uint8_t *bt, size_t bt_len, const uint8_t *body,
                    size_t len);
    /* closed: the connection is gone (peer closed, protocol error, or sp_server_close). Called
     * once per connection that was accepted. */
    void (*closed)(void *arg, sp_conn *c);
} sp_handlers;

/*
 * sp_server_listen binds and listens on the Unix socket path (without "ipc://"). A leftover socket
 * file that nobody accepts on is removed first; one that accepts is "address in use". The file is
 * removed again by sp_server_close. max_msg bounds a message (backtrace and body). Errors: HSB_EIO
 * (reason logged), HSB_ENOMEM.
 */
hsb_err sp_server_listen(uv_loop_t *loop, const char *path, size_t max_msg, const sp_handlers *h,
                         void *arg, sp_server **out);

/* sp_server_kick offers refused requests again, from a fresh loop iteration. Cheap when none. */
void sp_server_kick(sp_server *s);

/*
 * sp_server_close stops listening and closes every connection (their closed handler runs before it
 * returns). Memory is released as the handles' close callbacks run: run the loop, then call
 * sp_server_free. NULL-safe.
 */
void sp_server_close(sp_server *s);

/* sp_server_free frees a closed server once the loop has run its close callbacks. NULL-safe. */
void sp_server_free(sp_server *s);

/* sp_conn_id is the connection's id for logs and lookups: never 0, with the high bit set, so it
 * never equals an nng pipe id (nng's are below 2^31). */
uint32_t sp_conn_id(const sp_conn *c);

/* sp_conn_alive is false once the connection has closed (replies are then dropped). */
bool sp_conn_alive(const sp_conn *c);

/* sp_conn_ref and sp_conn_unref keep a connection's memory while a request on it is answered. */
void sp_conn_ref(sp_conn *c);
void sp_conn_unref(sp_conn *c);

/*
 * sp_conn_reply sends one reply: bt as received with the request, then body. It writes at once
 * when the socket takes it, and otherwise copies what is left and queues it. A write error closes
 * the connection. Dropped silently when the connection is closed.
 */
void sp_conn_reply(sp_conn *c, const uint8_t *bt, size_t bt_len, const void *body, size_t len);

#endif /* HSB_DAEMON_SP_IPC_H */
