/*
 * requester - sends N requests with hsbus_request from T threads and prints round-trip times.
 *
 *   requester [url] [to] [count] [threads] [body-bytes] [receivers]
 *
 * Defaults: ipc://run/agents.sock, to "echo", 1000 requests, 16 threads, 64-byte bodies, 1
 * receiver thread (each keeps one fetch parked at the daemon). Prints
 * one JSON line: {"count":..,"errors":..,"secs":..,"rps":..,"p50_us":..,"p99_us":..,"max_us":..}.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hsbus.h>

typedef struct req_ctx {
    hsbus_client *client;
    const char *to;
    size_t body_len;
    size_t count;     /* requests for this thread */
    uint64_t *rtt_us; /* count entries */
    size_t errors;
} req_ctx;

static uint64_t req_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void *req_thread(void *arg)
{
    req_ctx *rc = arg;
    char *payload = malloc(rc->body_len + 1);
    hsbus_msg msg;

    if (payload == NULL) {
        rc->errors = rc->count;
        return NULL;
    }
    memset(payload, 'x', rc->body_len);
    hsbus_msg_init(&msg);
    snprintf(msg.to, sizeof(msg.to), "%s", rc->to);
    if (hsbus_msg_set_body_bin(&msg, payload, rc->body_len) != HSBUS_OK) {
        rc->errors = rc->count;
        goto out;
    }
    for (size_t i = 0; i < rc->count; i++) {
        hsbus_msg *reply = NULL;
        uint64_t t0 = req_now_us();
        hsbus_err err = hsbus_request(rc->client, &msg, 5000, &reply);

        rc->rtt_us[i] = req_now_us() - t0;
        if (err != HSBUS_OK) {
            if (rc->errors++ == 0) {
                fprintf(stderr, "requester: %s: %s\n", hsbus_err_name(err),
                        hsbus_errmsg(rc->client));
            }
        }
        hsbus_msg_free(&reply);
    }
out:
    hsbus_msg_clear(&msg);
    free(payload);
    return NULL;
}

static int req_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : "ipc://run/agents.sock";
    const char *to = argc > 2 ? argv[2] : "echo";
    size_t count = argc > 3 ? strtoul(argv[3], NULL, 10) : 1000;
    unsigned nthreads = argc > 4 ? (unsigned)atoi(argv[4]) : 16;
    size_t body_len = argc > 5 ? strtoul(argv[5], NULL, 10) : 64;
    unsigned receivers = argc > 6 ? (unsigned)atoi(argv[6]) : 1;
    hsbus_opts opts = {.agent = "requester", .contexts = nthreads + 1};
    hsbus_client *client = NULL;
    pthread_t *th = NULL;
    req_ctx *rcs = NULL;
    uint64_t *all = NULL;
    size_t errors = 0, done = 0;
    uint64_t t0, t1;
    int rc = 1;

    if (count == 0 || nthreads == 0 || nthreads > 1024) {
        fprintf(stderr, "usage: requester [url] [to] [count>0] [threads 1..1024] [body-bytes]\n");
        return 2;
    }
    if (hsbus_connect(url, &opts, &client) != HSBUS_OK) {
        fprintf(stderr, "requester: connect %s: %s\n", url, hsbus_errmsg(NULL));
        return 1;
    }
    if (hsbus_start(client, receivers) != HSBUS_OK) {
        fprintf(stderr, "requester: start: %s\n", hsbus_errmsg(client));
        goto out;
    }
    th = calloc(nthreads, sizeof(*th));
    rcs = calloc(nthreads, sizeof(*rcs));
    all = calloc(count, sizeof(*all));
    if (th == NULL || rcs == NULL || all == NULL) {
        goto out;
    }
    t0 = req_now_us();
    for (unsigned i = 0; i < nthreads; i++) {
        rcs[i] = (req_ctx){.client = client,
                           .to = to,
                           .body_len = body_len,
                           .count = count / nthreads + (i < count % nthreads),
                           .rtt_us = all + done};
        done += rcs[i].count;
        pthread_create(&th[i], NULL, req_thread, &rcs[i]);
    }
    for (unsigned i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        errors += rcs[i].errors;
    }
    t1 = req_now_us();
    qsort(all, count, sizeof(*all), req_cmp);
    printf("{\"count\":%zu,\"errors\":%zu,\"threads\":%u,\"secs\":%.3f,\"rps\":%.0f,"
           "\"p50_us\":%llu,\"p99_us\":%llu,\"max_us\":%llu}\n",
           count, errors, nthreads, (double)(t1 - t0) / 1e6,
           (double)count * 1e6 / (double)(t1 - t0 + 1), (unsigned long long)all[count / 2],
           (unsigned long long)all[count * 99 / 100], (unsigned long long)all[count - 1]);
    rc = errors == 0 ? 0 : 1;
out:
    free(all);
    free(rcs);
    free(th);
    hsbus_close(&client);
    return rc;
}
