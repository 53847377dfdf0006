/*
 * daemon/inbox.c - mutex-protected list + uv_async_send (the pattern of nats.c's libuv adapter).
 */
#include "daemon/inbox.h"

static void inbox_async_cb(uv_async_t *h)
{
    inbox_drain(h->data);
}

hsb_err inbox_init(inbox *ib, uv_loop_t *loop, inbox_handler handler, void *arg)
{
    ib->head = ib->tail = NULL;
    ib->count = 0;
    ib->drained = 0;
    ib->handler = handler;
    ib->arg = arg;
    if (pthread_mutex_init(&ib->lock, NULL) != 0) {
        return HSB_EIO;
    }
    if (uv_async_init(loop, &ib->async, inbox_async_cb) != 0) {
        pthread_mutex_destroy(&ib->lock);
        return HSB_EIO;
    }
    ib->async.data = ib;
    return HSB_OK;
}

static void inbox_append_locked(inbox *ib, inbox_item *item)
{
    item->next = NULL;
    if (ib->tail != NULL) {
        ib->tail->next = item;
    } else {
        ib->head = item;
    }
    ib->tail = item;
    ib->count++;
}

void inbox_post(inbox *ib, inbox_item *item)
{
    pthread_mutex_lock(&ib->lock);
    inbox_append_locked(ib, item);
    pthread_mutex_unlock(&ib->lock);
    uv_async_send(&ib->async);
}

hsb_err inbox_try_post(inbox *ib, inbox_item *item, size_t limit)
{
    pthread_mutex_lock(&ib->lock);
    if (ib->count >= limit) {
        pthread_mutex_unlock(&ib->lock);
        return HSB_EBUSY;
    }
    inbox_append_locked(ib, item);
    pthread_mutex_unlock(&ib->lock);
    uv_async_send(&ib->async);
    return HSB_OK;
}

void inbox_drain(inbox *ib)
{
    pthread_mutex_lock(&ib->lock);
    inbox_item *item = ib->head;
    ib->head = ib->tail = NULL;
    ib->count = 0;
    pthread_mutex_unlock(&ib->lock);

    while (item != NULL) {
        /* Read next first: the handler owns the item and may free or re-post it. */
        inbox_item *next = item->next;
        ib->handler(ib->arg, item);
        ib->drained++;
        item = next;
    }
}

void inbox_close(inbox *ib)
{
    uv_close((uv_handle_t *)&ib->async, NULL);
}

void inbox_fini(inbox *ib)
{
    pthread_mutex_destroy(&ib->lock);
}
