/*
 * ops_client - a small libhsbus client for the operations tests.
 *
 *   ops_client request URL TO TEXT          send TEXT (a msgpack str body) to TO and wait for the
 *                                           reply (the echo agent answers); prints "ok"
 *   ops_client send URL TO TEXT             send without waiting for a reply; prints the id
 *   ops_client sink URL AGENT N SECONDS     connect as AGENT, nack every message received until N
 *                                           were nacked or SECONDS passed; prints the count
 *   ops_client idle URL AGENT SECONDS       connect as AGENT and fetch nothing for SECONDS (its
 *                                           messages stay queued)
 *   ops_client listen URL TOPIC SECONDS     connect as "ops-listen" subscribed to TOPIC, print
 *                                           each message's topic and printable body bytes, and
 *                                           exit 0 after the first one (1 if none came)
 *
 * Exit status 0 on success, 1 on failure (the reason on stderr).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hsbus.h>

static int ops_fail(const char *what, hsbus_client *c, hsbus_err err)
{
    fprintf(stderr, "ops_client: %s: %s: %s\n", what, hsbus_err_name(err), hsbus_errmsg(c));
    return 1;
}

static int ops_request(const char *url, const char *to, const char *text, int wait_reply)
{
    hsbus_opts o = {.agent = "ops-sender"};
    hsbus_client *c = NULL;
    hsbus_msg msg, *reply = NULL;
    uint64_t id = 0;
    hsbus_err err;
    int rc = 0;

    err = hsbus_connect(url, &o, &c);
    if (err != HSBUS_OK) {
        return ops_fail("connect", NULL, err);
    }
    hsbus_msg_init(&msg);
    snprintf(msg.to, sizeof(msg.to), "%s", to);
    hsbus_msg_set_body_str(&msg, text, strlen(text));
    if (wait_reply) {
        err = hsbus_request(c, &msg, 5000, &reply);
    } else {
        err = hsbus_send(c, &msg, &id);
    }
    if (err != HSBUS_OK) {
        rc = ops_fail(wait_reply ? "request" : "send", c, err);
    } else if (wait_reply) {
        printf("ok\n");
    } else {
        printf("%llu\n", (unsigned long long)id);
    }
    hsbus_msg_free(&reply);
    hsbus_msg_clear(&msg);
    hsbus_close(&c);
    return rc;
}

static int ops_sink(const char *url, const char *agent, int n, int seconds)
{
    hsbus_opts o = {.agent = agent};
    hsbus_client *c = NULL;
    time_t end = time(NULL) + seconds;
    int nacked = 0;
    hsbus_err err;

    err = hsbus_connect(url, &o, &c);
    if (err != HSBUS_OK) {
        return ops_fail("connect", NULL, err);
    }
    printf("connected\n");
    fflush(stdout);
    while (nacked < n && time(NULL) < end) {
        hsbus_msg *msgs[16];
        size_t got = 0;
        err = hsbus_fetch(c, 16, 500, msgs, &got);
        if (err != HSBUS_OK) {
            int rc = ops_fail("fetch", c, err);
            hsbus_close(&c);
            return rc;
        }
        for (size_t i = 0; i < got; i++) {
            hsbus_nack(c, msgs[i]->id, "ops test sink refuses everything");
            hsbus_msg_free(&msgs[i]);
            nacked++;
        }
        hsbus_flush_acks(c);
    }
    hsbus_flush_acks(c);
    printf("nacked %d\n", nacked);
    hsbus_close(&c);
    return nacked >= n ? 0 : 1;
}

static int ops_idle(const char *url, const char *agent, int seconds)
{
    hsbus_opts o = {.agent = agent};
    hsbus_client *c = NULL;
    hsbus_err err = hsbus_connect(url, &o, &c);

    if (err != HSBUS_OK) {
        return ops_fail("connect", NULL, err);
    }
    printf("connected\n");
    fflush(stdout);
    sleep((unsigned)seconds);
    hsbus_close(&c);
    return 0;
}

static int ops_listen(const char *url, const char *topic, int seconds)
{
    const char *subs[1] = {topic};
    hsbus_opts o = {.agent = "ops-listen", .subscribes = subs, .n_subscribes = 1};
    hsbus_client *c = NULL;
    time_t end = time(NULL) + seconds;
    hsbus_err err;

    err = hsbus_connect(url, &o, &c);
    if (err != HSBUS_OK) {
        return ops_fail("connect", NULL, err);
    }
    printf("connected\n");
    fflush(stdout);
    while (time(NULL) < end) {
        hsbus_msg *msgs[16];
        size_t got = 0;
        err = hsbus_fetch(c, 16, 500, msgs, &got);
        if (err != HSBUS_OK) {
            int rc = ops_fail("fetch", c, err);
            hsbus_close(&c);
            return rc;
        }
        for (size_t i = 0; i < got; i++) {
            printf("topic=%s from=%s body=", msgs[i]->topic, msgs[i]->from);
            for (size_t k = 0; k < msgs[i]->body_len; k++) {
                int ch = msgs[i]->body[k];
                putchar(ch >= 0x20 && ch < 0x7f ? ch : '.');
            }
            putchar('\n');
            hsbus_ack(c, msgs[i]->id);
            hsbus_msg_free(&msgs[i]);
        }
        if (got > 0) {
            hsbus_flush_acks(c);
            hsbus_close(&c);
            return 0;
        }
    }
    hsbus_close(&c);
    fprintf(stderr, "ops_client: nothing on %s within %d s\n", topic, seconds);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "request") == 0) {
        return ops_request(argv[2], argv[3], argv[4], 1);
    }
    if (argc == 5 && strcmp(argv[1], "send") == 0) {
        return ops_request(argv[2], argv[3], argv[4], 0);
    }
    if (argc == 6 && strcmp(argv[1], "sink") == 0) {
        return ops_sink(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]));
    }
    if (argc == 5 && strcmp(argv[1], "idle") == 0) {
        return ops_idle(argv[2], argv[3], atoi(argv[4]));
    }
    if (argc == 5 && strcmp(argv[1], "listen") == 0) {
        return ops_listen(argv[2], argv[3], atoi(argv[4]));
    }
    fprintf(stderr, "usage: ops_client request|send URL TO TEXT | sink URL AGENT N SECONDS | "
                    "idle URL AGENT SECONDS | listen URL TOPIC SECONDS\n");
    return 2;
}
