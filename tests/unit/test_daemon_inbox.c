/*
 * tests/unit/test_daemon_inbox.c - daemon/inbox.c: items posted from several threads all reach
 * the loop thread, each once, in each poster's order; the bounded post refuses when full.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "daemon/inbox.h"

#define TI_THREADS 4
#define TI_PER     20000

typedef struct ti_item {
    inbox_item item;
    int thread;
    int seq;
} ti_item;

typedef struct ti_state {
    inbox ib;
    uv_loop_t loop;
    int next[TI_THREADS]; /* next expected seq per thread */
    int handled;
    int order_errors;
} ti_state;

static void ti_handler(void *arg, inbox_item *it)
{
    ti_state *s = arg;
    ti_item *t = (ti_item *)it;
    if (t->seq != s->next[t->thread]) {
        s->order_errors++;
    }
    s->next[t->thread] = t->seq + 1;
    s->handled++;
    free(t);
    if (s->handled == TI_THREADS * TI_PER) {
        inbox_close(&s->ib); /* the loop ends when the async handle is closed */
    }
}

typedef struct ti_poster {
    ti_state *s;
    int thread;
} ti_poster;

static void *ti_post_main(void *arg)
{
    ti_poster *p = arg;
    for (int i = 0; i < TI_PER; i++) {
        ti_item *t = malloc(sizeof(*t));
        t->item.kind = 1;
        t->thread = p->thread;
        t->seq = i;
        inbox_post(&p->s->ib, &t->item);
    }
    return NULL;
}

static void test_many_threads_every_item_once_in_order(void **state)
{
    (void)state;
    static ti_state s;
    memset(&s, 0, sizeof(s));
    assert_int_equal(uv_loop_init(&s.loop), 0);
    assert_int_equal(inbox_init(&s.ib, &s.loop, ti_handler, &s), HSB_OK);
    pthread_t th[TI_THREADS];
    ti_poster ps[TI_THREADS];
    for (int i = 0; i < TI_THREADS; i++) {
        ps[i] = (ti_poster){&s, i};
        assert_int_equal(pthread_create(&th[i], NULL, ti_post_main, &ps[i]), 0);
    }
    uv_run(&s.loop, UV_RUN_DEFAULT); /* returns once the handler closed the inbox */
    for (int i = 0; i < TI_THREADS; i++) {
        pthread_join(th[i], NULL);
    }
    assert_int_equal(s.handled, TI_THREADS * TI_PER);
    assert_int_equal(s.order_errors, 0);
    for (int i = 0; i < TI_THREADS; i++) {
        assert_int_equal(s.next[i], TI_PER);
    }
    assert_int_equal(uv_loop_close(&s.loop), 0);
    inbox_fini(&s.ib);
}

static int tb_count;
static void tb_handler(void *arg, inbox_item *it)
{
    (void)arg;
    (void)it;
    tb_count++;
}

static void test_bounded_post_refuses_when_full(void **state)
{
    (void)state;
    uv_loop_t loop;
    inbox ib;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(inbox_init(&ib, &loop, tb_handler, NULL), HSB_OK);
    inbox_item items[4];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(inbox_try_post(&ib, &items[i], 3), HSB_OK);
    }
    assert_int_equal(inbox_try_post(&ib, &items[3], 3), HSB_EBUSY);
    tb_count = 0;
    inbox_drain(&ib);
    assert_int_equal(tb_count, 3);                               /* the refused item was not kept */
    assert_int_equal(inbox_try_post(&ib, &items[3], 3), HSB_OK); /* room again */
    inbox_drain(&ib);
    assert_int_equal(tb_count, 4);
    inbox_close(&ib);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    inbox_fini(&ib);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_threads_every_item_once_in_order),
        cmocka_unit_test(test_bounded_post_refuses_when_full),
    };
    return cmocka_run_group_tests_name("daemon_inbox", tests, NULL, NULL);
}
