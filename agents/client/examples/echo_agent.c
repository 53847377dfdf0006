/*
 * echo_agent - an external agent that answers every request with its own body.
 *
 *   echo_agent [url] [agent-name] [threads]
 *
 * Defaults: ipc://run/agents.sock, "ext-echo", 2 threads. The agent handles the type "ext.echo";
 * send it a message with to = its name or type = "ext.echo". Stops on SIGINT or SIGTERM (exit 0).
 *
 * It shows how an agent outlives daemon restarts: libhsbus does not reconnect by itself (hello
 * binds one connection to the agent), so when hsbus_wait reports the connection lost, the agent
 * closes the client and connects again, waiting longer after each failed attempt (100 ms doubling
 * to 5 s). Messages it had fetched but not acked are redelivered by the daemon. A refusal that
 * retrying cannot fix (a bad token, a bad name, another protocol version) ends it with exit 1.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <hsbus.h>

#define ECHO_BACKOFF_MIN_MS 100
#define ECHO_BACKOFF_MAX_MS 5000

static volatile sig_atomic_t echo_stop;

static void echo_on_signal(int sig)
{
    (void)sig;
    echo_stop = 1;
}

/* Runs on a receiver thread: answer with the request's body; the library acks on HSBUS_OK. */
static hsbus_err echo_handle(hsbus_client *client, const hsbus_msg *msg, void *arg)
{
    (void)arg;
    if (msg->corr != 0 || msg->id == 0) {
        return HSBUS_OK; /* a reply or a notice, not a request: nothing to answer */
    }
    return hsbus_reply(client, msg, msg->body, msg->body_len);
}

/* echo_retryable: the daemon is absent, restarting or draining; another attempt may succeed. */
static int echo_retryable(hsbus_err err)
{
    return err == HSBUS_EIO || err == HSBUS_ETIMEDOUT || err == HSBUS_ECLOSED ||
           err == HSBUS_ESHUTDOWN;
}

static void echo_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : "ipc://run/agents.sock";
    const char *handles[] = {"ext.echo"};
    hsbus_opts opts = {
        .agent = argc > 2 ? argv[2] : "ext-echo", .handles = handles, .n_handles = 1};
    unsigned threads = argc > 3 ? (unsigned)atoi(argv[3]) : 2;
    int backoff = ECHO_BACKOFF_MIN_MS;

    signal(SIGINT, echo_on_signal);
    signal(SIGTERM, echo_on_signal);
    while (!echo_stop) {
        hsbus_client *client = NULL;
        hsbus_err err = hsbus_connect(url, &opts, &client);

        if (err == HSBUS_OK) {
            hsbus_set_handler(client, echo_handle, NULL);
            err = hsbus_start(client, threads);
        }
        if (err != HSBUS_OK) {
            fprintf(stderr, "echo_agent: connect %s: %s (%s)\n", url, hsbus_strerror(err),
                    client == NULL ? hsbus_errmsg(NULL) : hsbus_errmsg(client));
            hsbus_close(&client);
            if (!echo_retryable(err)) {
                return 1;
            }
            fprintf(stderr, "echo_agent: retrying in %d ms\n", backoff);
            echo_sleep_ms(backoff);
            backoff = backoff * 2 > ECHO_BACKOFF_MAX_MS ? ECHO_BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        backoff = ECHO_BACKOFF_MIN_MS;
        fprintf(stderr, "echo_agent: serving as %s on %s\n", opts.agent, url);
        while (!echo_stop && hsbus_wait(client, 200) != HSBUS_ECLOSED) {
        }
        if (!echo_stop) {
            fprintf(stderr, "echo_agent: connection lost; reconnecting\n");
        }
        hsbus_close(&client);
    }
    return 0;
}
