/*
 * echo_agent - an external agent that answers every request with its own body.
 *
 *   echo_agent [url] [agent-name] [threads]
 *
 * Defaults: ipc://run/agents.sock, "ext-echo", 2 threads. The agent handles the type "ext.echo";
 * send it a message with to = its name or type = "ext.echo". Stops on SIGINT or SIGTERM (exit 0)
 * or when the daemon goes away (exit 1).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <hsbus.h>

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

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : "ipc://run/agents.sock";
    const char *handles[] = {"ext.echo"};
    hsbus_opts opts = {
        .agent = argc > 2 ? argv[2] : "ext-echo", .handles = handles, .n_handles = 1};
    unsigned threads = argc > 3 ? (unsigned)atoi(argv[3]) : 2;
    hsbus_client *client = NULL;
    hsbus_err err;

    signal(SIGINT, echo_on_signal);
    signal(SIGTERM, echo_on_signal);
    err = hsbus_connect(url, &opts, &client);
    if (err != HSBUS_OK) {
        fprintf(stderr, "echo_agent: connect %s: %s (%s)\n", url, hsbus_strerror(err),
                hsbus_errmsg(NULL));
        return 1;
    }
    hsbus_set_handler(client, echo_handle, NULL);
    err = hsbus_start(client, threads);
    if (err != HSBUS_OK) {
        fprintf(stderr, "echo_agent: start: %s\n", hsbus_strerror(err));
        hsbus_close(&client);
        return 1;
    }
    fprintf(stderr, "echo_agent: serving as %s on %s\n", opts.agent, url);
    while (!echo_stop) {
        err = hsbus_wait(client, 200); /* HSBUS_ECLOSED: the daemon went away */
        if (err == HSBUS_ECLOSED) {
            fprintf(stderr, "echo_agent: connection lost\n");
            break;
        }
    }
    hsbus_close(&client);
    return err == HSBUS_ECLOSED ? 1 : 0;
}
