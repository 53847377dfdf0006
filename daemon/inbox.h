/*
 * daemon/inbox.h - the only door into the loop thread.
 *
 * Other threads (nng callbacks, agent workers, the store's writer) hand work to the loop by
 * posting an item: an inbox_item embedded in the poster's own object, so posting allocates
 * nothing. Posting appends to a mutex-protected list and calls uv_async_send; the loop's async
 * callback swaps the whole list out under the lock and handles every item outside it. Wake-ups
 * coalesce (libuv may call the callback once for many sends), which is why the callback drains
 * the list instead of counting wake-ups.
 *
 * Ownership: inbox_post takes the item; it is handed to the handler on the loop thread, which then
 * owns it. Items are handled in the order they were posted.
 */
#ifndef HSB_DAEMON_INBOX_H
#define HSB_DAEMON_INBOX_H

#include <pthread.h>
#include <stddef.h>
#include <uv.h>

#include "proto/err.h"

typedef struct inbox_item {
    struct inbox_item *next;
    int kind; /* the handler's discriminator */
} inbox_item;

/* Called on the loop thread for each item, in posting order. */
typedef void (*inbox_handler)(void *arg, inbox_item *item);

typedef struct inbox {
    uv_async_t async;
    pthread_mutex_t lock;
    inbox_item *head, *tail;
    size_t count; /* items queued, for the bounded post */
    inbox_handler handler;
    void *arg;
    size_t drained; /* items handled, for stats; loop thread */
} inbox;

/* inbox_init registers the async handle on loop. Loop thread, before other threads start.
 * Errors: HSB_EIO if libuv refuses the handle. */
hsb_err inbox_init(inbox *ib, uv_loop_t *loop, inbox_handler handler, void *arg);

/* inbox_post queues item and wakes the loop. Any thread; never blocks beyond the list lock. */
void inbox_post(inbox *ib, inbox_item *item);

/* inbox_try_post is inbox_post with a bound: it refuses with HSB_EBUSY (and keeps nothing) when
 * `limit` items are already queued. Used for agent sends, which must feel backpressure. */
hsb_err inbox_try_post(inbox *ib, inbox_item *item, size_t limit);

/* inbox_drain handles everything queued now. Loop thread. The async callback calls it; shutdown
 * calls it once more after the other threads have stopped. */
void inbox_drain(inbox *ib);

/* inbox_close closes the async handle (uv_close). Loop thread. Items still queued are left for a
 * final inbox_drain by the caller. */
void inbox_close(inbox *ib);

/* inbox_fini destroys the lock after the handle's close callback. */
void inbox_fini(inbox *ib);

#endif /* HSB_DAEMON_INBOX_H */
