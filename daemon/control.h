/*
 * daemon/control.h - the control socket: hsbusctl's door into the daemon.
 *
 * An nng REP socket listens on cfg.control_listen (default ipc://<run_dir>/control.sock). The IPC
 * socket file is created with mode 0600 (NNG_OPT_IPC_PERMISSIONS, set before the listener
 * starts), and every request's peer uid (NNG_OPT_IPC_PEER_UID of the pipe it came on) must be the
 * daemon's own uid or root: anyone else is answered E_DENIED and logged. A peer whose uid cannot
 * be read (a non-IPC transport) is denied too, so the control socket is local by construction.
 *
 * Requests {cmd, args} are decoded on the nng thread (hsb_dec_ctl_request) and looked up in the
 * command table (daemon/cmdtab.h). Then:
 *   - a loop command is posted to the loop through the inbox (kind CONTROL_ITEM_CALL, routed
 *     back by srv_set_ext_handler); the loop runs the handler and sends the reply with
 *     nng_ctx_send, which never blocks;
 *   - a CMDTAB_WORKER command (one that may block on the store) is queued to the control
 *     socket's own worker thread, which runs it and sends the reply.
 * A handful of contexts serve requests concurrently; each is busy from the request until its
 * reply has been sent.
 *
 * Lifecycle: control_start (loop thread) -> control_stop (loop thread; joins the worker, closes
 * the socket, waits for the contexts' aios) -> control_free. Items still in the inbox after
 * control_stop are dropped by control_handle without a reply.
 */
#ifndef HSB_DAEMON_CONTROL_H
#define HSB_DAEMON_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "daemon/cmdtab.h"
#include "daemon/inbox.h"
#include "proto/envelope.h"
#include "proto/err.h"

struct srv;
struct alerts;

/* The inbox kind of a control request on its way to the loop. */
#define CONTROL_ITEM_CALL 40

typedef struct control control;

/* What a handler sees. Built by the control socket; valid until the reply is sent. */
struct cmdtab_call {
    struct srv *s;
    struct alerts *al;         /* rates, loop lag, firing alerts */
    const cmdtab_entry *entry; /* the row being run */
    const char *const *args;   /* arguments after the sub-command */
    size_t n_args;
    msgpack_packer *pk;           /* pack exactly one value: the reply's data */
    char msg[HSB_REASON_MAX + 1]; /* error text when the handler fails */
    void *scratch;                /* a handler's state between stages; freed by control */
    uint64_t u64;                 /* a handler's number between stages */
    void *ctx;                    /* control's context; private */
};

/*
 * control_start creates the socket, listens on url with mode 0600 and starts ncontexts receiving
 * contexts and the worker thread. The loop thread must route CONTROL_ITEM_CALL items to
 * control_handle. On HSB_OK *out is owned by the caller until control_free. Loop thread, at
 * start-up; blocks only while nng binds. Errors (logged with the URL): HSB_EIO (the socket or its
 * listener failed: address in use, no such directory), HSB_ENOMEM.
 */
hsb_err control_start(struct srv *s, struct alerts *al, const char *url, unsigned ncontexts,
                      control **out);

/* control_handle runs the command carried by a CONTROL_ITEM_CALL item and sends its reply. Loop
 * thread. After control_stop it only releases the item. */
void control_handle(control *c, inbox_item *item);

/*
 * control_stop stops accepting requests, joins the worker thread (a running command finishes,
 * queued ones are dropped) and closes the socket. Blocks until the contexts' aios are idle. Loop
 * thread. Safe to call twice.
 */
void control_stop(control *c);

/* control_free frees c after control_stop. control_free(NULL) does nothing. */
void control_free(control *c);

/*
 * control_call_defer tells the control socket that the handler running now will be finished later
 * by exactly one control_call_finish (typically from a store completion). Call it before starting
 * the operation whose completion finishes the call; from then on the handler must not touch
 * call->pk, and its return value is ignored. If starting the operation fails, the handler calls
 * control_call_finish itself with the error. The reply is sent once both the handler has returned
 * and the completion has finished, in whichever order. Handler's thread, while it runs.
 */
void control_call_defer(cmdtab_call *call);

/*
 * control_call_continue hands the call to the loop, where fn runs next as if it were the handler
 * (it may pack the data, fail, or defer again); the current handler's return value is ignored. A
 * CMDTAB_WORKER handler uses it to hand what it read from the store to the loop (dlq replay).
 * Handler's thread, while it runs; never blocks.
 */
void control_call_continue(cmdtab_call *call, cmdtab_fn fn);

/*
 * control_call_finish completes a deferred call: with HSB_OK, the data the completion packed with
 * call->pk is sent; otherwise an error reply with call->msg. Any thread; never blocks.
 */
void control_call_finish(cmdtab_call *call, hsb_err err);

/* control_requests returns the number of requests served, control_denied those refused by the
 * peer check. Any thread (atomic). */
unsigned long control_requests(const control *c);
unsigned long control_denied(const control *c);

#endif /* HSB_DAEMON_CONTROL_H */
