/*
 * tests/integration/test_ipc.c - the daemon's ipc listener (daemon/sp_ipc.c) at the byte level.
 *
 * hsbusd serves ipc:// itself, speaking nng's REQ/REP wire protocol; these tests talk to it over a
 * plain Unix socket, byte by byte as nng's ipc transport does, to pin down what every REQ client
 * relies on: the handshake, framing, backtraces echoed in order, pipelined requests, and what
 * closes a connection. A real daemon process; nothing asserts a timing.
 */
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <msgpack.h>

#include "harness.h"
#include "proto/codec.h"

static const uint8_t ti_req_hello[8] = {0, 'S', 'P', 0, 0, 0x30, 0, 0};

/* ti_connect opens a Unix socket to the daemon's agent socket. */
static int ti_connect(const ith_daemon *d)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    const char *path = d->url + strlen("ipc://");
    assert_true(strlen(path) < sizeof(sa.sun_path));
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* ti_read reads exactly n bytes within 10 s. Returns n, 0 at end of stream, -1 on timeout. */
static ssize_t ti_read(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 10000) != 1) {
            return -1;
        }
        ssize_t r = read(fd, (uint8_t *)buf + got, n - got);
        if (r <= 0) {
            return r == 0 ? 0 : -1;
        }
        got += (size_t)r;
    }
    return (ssize_t)n;
}

static void ti_write(int fd, const void *buf, size_t n)
{
    assert_int_equal(write(fd, buf, n), (ssize_t)n);
}

static uint32_t ti_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t ti_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

/* ti_frame appends one message to out: type 1, u64 length, the backtrace words, the body. */
static void ti_frame(msgpack_sbuffer *out, const uint32_t *bt, size_t nbt, const void *body,
                     size_t len)
{
    uint8_t head[9] = {1};
    uint64_t mlen = nbt * 4 + len;
    for (int i = 0; i < 8; i++) {
        head[1 + i] = (uint8_t)(mlen >> (56 - 8 * i));
    }
    msgpack_sbuffer_write(out, (const char *)head, sizeof(head));
    for (size_t i = 0; i < nbt; i++) {
        uint8_t w[4] = {(uint8_t)(bt[i] >> 24), (uint8_t)(bt[i] >> 16), (uint8_t)(bt[i] >> 8),
                        (uint8_t)bt[i]};
        msgpack_sbuffer_write(out, (const char *)w, sizeof(w));
    }
    msgpack_sbuffer_write(out, body, len);
}

/* ti_request encodes req as a message with backtrace bt and appends it to out. */
static void ti_request(msgpack_sbuffer *out, const uint32_t *bt, size_t nbt, const hsb_request *req)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(hsb_enc_request(&pk, req), HSB_OK);
    ti_frame(out, bt, nbt, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static hsb_request ti_hello(const char *agent)
{
    hsb_request req;
    memset(&req, 0, sizeof(req));
    req.op = HSB_OP_HELLO;
    req.u.hello.v = 1;
    snprintf(req.u.hello.agent, sizeof(req.u.hello.agent), "%s", agent);
    return req;
}

/*
 * ti_reply reads one reply, checks that it carries the backtrace bt (nbt words), and decodes its
 * body as the answer to op. Returns the reply's error (HSB_OK when ok).
 */
static hsb_err ti_reply(int fd, const uint32_t *bt, size_t nbt, hsb_op op, hsb_reply *out)
{
    uint8_t head[9];
    assert_int_equal(ti_read(fd, head, sizeof(head)), (ssize_t)sizeof(head));
    assert_int_equal(head[0], 1);
    uint64_t mlen = ti_be64(head + 1);
    assert_true(mlen >= nbt * 4 && mlen < (1u << 20));
    uint8_t *m = malloc(mlen);
    assert_non_null(m);
    assert_int_equal(ti_read(fd, m, mlen), (ssize_t)mlen);
    for (size_t i = 0; i < nbt; i++) {
        assert_int_equal(ti_be32(m + 4 * i), bt[i]);
    }
    hsb_dec dec;
    hsb_reply r;
    assert_int_equal(hsb_dec_init(&dec), HSB_OK);
    assert_int_equal(hsb_dec_reply(&dec, op, m + nbt * 4, mlen - nbt * 4, &r), HSB_OK);
    hsb_err err = r.ok ? HSB_OK : r.err;
    if (out != NULL) {
        *out = r;
        out->msg = NULL; /* owned by the decoder */
    }
    hsb_dec_fini(&dec);
    free(m);
    return err;
}

/* ti_handshake checks the daemon's half of the handshake and sends a REQ peer's. */
static void ti_handshake(int fd)
{
    static const uint8_t rep[8] = {0, 'S', 'P', 0, 0, 0x31, 0, 0};
    uint8_t got[8];
    assert_int_equal(ti_read(fd, got, sizeof(got)), 8);
    assert_memory_equal(got, rep, sizeof(rep));
    ti_write(fd, ti_req_hello, sizeof(ti_req_hello));
}

/* ---- tests -------------------------------------------------------------------------------- */

/* The handshake, backtraces of one and two hops echoed, pipelined requests answered in order, and
 * a request with a malformed backtrace dropped without closing the connection. */
static void t_wire(void **state)
{
    (void)state;
    ith_daemon d;
    assert_true(ith_start(&d, NULL));
    int fd = ti_connect(&d);
    ti_handshake(fd);

    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    hsb_request hello = ti_hello("wire");
    const uint32_t bt1[] = {0x00000005, 0x80000001}; /* a device hop, then the request id */
    ti_request(&out, bt1, 2, &hello);
    const uint32_t bad[] = {0x00000007}; /* no word with the high bit: dropped */
    ti_frame(&out, bad, 1, "", 0);
    const uint32_t bt2[] = {0x80000002};
    ti_request(&out, bt2, 1, &hello); /* a second hello on this connection: E_DENIED */
    ti_write(fd, out.data, out.size); /* all three in one write */
    msgpack_sbuffer_destroy(&out);

    assert_int_equal(ti_reply(fd, bt1, 2, HSB_OP_HELLO, NULL), HSB_OK);
    assert_int_equal(ti_reply(fd, bt2, 1, HSB_OP_HELLO, NULL), HSB_EDENIED);
    close(fd);
    assert_int_equal(ith_stop(&d, false), 0);
}

/*
 * Ten thousand requests in one write, read only after all of them were written: the replies
 * (about 800 KB) overflow the socket buffer, so the daemon queues the rest of them; every reply
 * still comes back, in order, each with its own request id.
 */
static void t_many_pipelined(void **state)
{
    (void)state;
    enum { N = 10000 };
    ith_daemon d;
    assert_true(ith_start(&d, NULL));
    int fd = ti_connect(&d);
    ti_handshake(fd);
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    hsb_request hello = ti_hello("many");
    for (uint32_t i = 0; i < N; i++) {
        const uint32_t bt[] = {0x80000000u | i};
        ti_request(&out, bt, 1, &hello); /* the first is accepted, the rest get E_DENIED */
    }
    ti_write(fd, out.data, out.size);
    msgpack_sbuffer_destroy(&out);
    for (uint32_t i = 0; i < N; i++) {
        const uint32_t bt[] = {0x80000000u | i};
        assert_int_equal(ti_reply(fd, bt, 1, HSB_OP_HELLO, NULL), i == 0 ? HSB_OK : HSB_EDENIED);
    }
    close(fd);
    assert_int_equal(ith_stop(&d, false), 0);
}

/*
 * A client that sends many requests and leaves without reading: the daemon's replies then hit a
 * closed socket (EPIPE). That closes the connection; it must not kill the daemon (SIGPIPE), which
 * then still serves the next client and exits cleanly.
 */
static void t_peer_gone(void **state)
{
    (void)state;
    ith_daemon d;
    assert_true(ith_start(&d, NULL));
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    hsb_request hello = ti_hello("gone");
    for (uint32_t i = 0; i < 5000; i++) {
        const uint32_t bt[] = {0x80000000u | i};
        ti_request(&out, bt, 1, &hello);
    }
    for (int round = 0; round < 3; round++) {
        int fd = ti_connect(&d);
        ti_handshake(fd);
        ti_write(fd, out.data, out.size);
        close(fd);
    }
    msgpack_sbuffer_destroy(&out);

    int fd = ti_connect(&d);
    ti_handshake(fd);
    msgpack_sbuffer_init(&out);
    const uint32_t bt[] = {0x80000001};
    ti_request(&out, bt, 1, &hello);
    ti_write(fd, out.data, out.size);
    msgpack_sbuffer_destroy(&out);
    assert_int_equal(ti_reply(fd, bt, 1, HSB_OP_HELLO, NULL), HSB_OK);
    close(fd);
    assert_int_equal(ith_stop(&d, false), 0);
}

/*
 * Clients that send durable messages and leave before the commit (forty of them at once, so that
 * the daemon sees them together): the bus answers those sends later, through the context that took
 * them, so the context must not be reused meanwhile (each round sends one message more, so a reused
 * context would grow its result array while the bus still writes into the old one). The daemon
 * stays healthy and still acknowledges a durable send.
 */
static void t_durable_send_then_gone(void **state)
{
    (void)state;
    enum { ROUNDS = 40 };
    ith_daemon d;
    assert_true(ith_start(&d, NULL));
    hsb_envelope env[ROUNDS + 1];
    for (size_t i = 0; i <= ROUNDS; i++) {
        hsb_envelope_init(&env[i]);
        snprintf(env[i].to, sizeof(env[i].to), "keeper");
        env[i].durable = true;
    }
    int keeper = ti_connect(&d); /* the destination: an agent that stays connected */
    ti_handshake(keeper);
    msgpack_sbuffer kb;
    msgpack_sbuffer_init(&kb);
    hsb_request kh = ti_hello("keeper");
    const uint32_t kbt[] = {0x80000009};
    ti_request(&kb, kbt, 1, &kh);
    ti_write(keeper, kb.data, kb.size);
    msgpack_sbuffer_destroy(&kb);
    assert_int_equal(ti_reply(keeper, kbt, 1, HSB_OP_HELLO, NULL), HSB_OK);
    hsb_request hello = ti_hello("leaver"), send;
    memset(&send, 0, sizeof(send));
    send.op = HSB_OP_SEND;
    send.u.send.msgs = env;
    const uint32_t bt1[] = {0x80000001}, bt2[] = {0x80000002};
    int fds[ROUNDS + 1];
    for (size_t round = 0; round <= ROUNDS; round++) { /* connected first: then all at once */
        fds[round] = ti_connect(&d);
        ti_handshake(fds[round]);
    }
    for (size_t round = 0; round <= ROUNDS; round++) {
        int fd = fds[round];
        msgpack_sbuffer out;
        msgpack_sbuffer_init(&out);
        ti_request(&out, bt1, 1, &hello);
        send.u.send.n_msgs = round < ROUNDS ? round + 1 : 1;
        ti_request(&out, bt2, 1, &send);
        ti_write(fd, out.data, out.size);
        msgpack_sbuffer_destroy(&out);
        if (round == ROUNDS) { /* the last one stays for its answer */
            assert_int_equal(ti_reply(fd, bt1, 1, HSB_OP_HELLO, NULL), HSB_OK);
            assert_int_equal(ti_reply(fd, bt2, 1, HSB_OP_SEND, NULL), HSB_OK);
        }
        shutdown(fd, SHUT_WR); /* gone as far as the daemon can tell: it reads the end */
    }
    for (size_t round = 0; round <= ROUNDS; round++) {
        close(fds[round]);
    }
    close(keeper);
    assert_int_equal(ith_stop(&d, false), 0);
}

/* A peer that is not nng REQ is closed before anything else happens. */
static void t_wrong_peer(void **state)
{
    (void)state;
    ith_daemon d;
    assert_true(ith_start(&d, NULL));
    int fd = ti_connect(&d);
    uint8_t got[8];
    assert_int_equal(ti_read(fd, got, sizeof(got)), 8);
    static const uint8_t pair[8] = {0, 'S', 'P', 0, 0, 0x10, 0, 0}; /* nng PAIR */
    ti_write(fd, pair, sizeof(pair));
    assert_int_equal(ti_read(fd, got, 1), 0); /* end of stream */
    close(fd);
    assert_true(ith_log_contains(&d, "not an nng REQ peer"));

    /* The daemon still serves a proper peer. */
    fd = ti_connect(&d);
    ti_handshake(fd);
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    hsb_request hello = ti_hello("after");
    const uint32_t bt[] = {0x80000009};
    ti_request(&out, bt, 1, &hello);
    ti_write(fd, out.data, out.size);
    msgpack_sbuffer_destroy(&out);
    assert_int_equal(ti_reply(fd, bt, 1, HSB_OP_HELLO, NULL), HSB_OK);
    close(fd);
    assert_int_equal(ith_stop(&d, false), 0);
}

/* A message announced over gateway.max_request closes the connection, as nng does. */
static void t_oversized(void **state)
{
    (void)state;
    ith_daemon d;
    const char *sets[] = {"gateway.max_request=1024", NULL};
    assert_true(ith_start(&d, sets));
    int fd = ti_connect(&d);
    ti_handshake(fd);
    static const uint8_t head[9] = {1, 0, 0, 0, 0, 0, 0, 0x10, 0x00}; /* 4096 bytes follow */
    ti_write(fd, head, sizeof(head));
    uint8_t b;
    assert_int_equal(ti_read(fd, &b, 1), 0);
    close(fd);
    assert_true(ith_log_contains(&d, "message over gateway.max_request"));
    assert_int_equal(ith_stop(&d, false), 0);
}

/*
 * With gateway.max_contexts=2 and two fetches parked, a third request waits (the connection stops
 * reading) until a fetch is answered and frees its context; it is then answered, not lost. Without
 * the bound the hello would be answered first, at once.
 */
static void t_contexts_bound(void **state)
{
    (void)state;
    ith_daemon d;
    const char *sets[] = {"gateway.max_contexts=2", NULL};
    assert_true(ith_start(&d, sets));
    int fd = ti_connect(&d);
    ti_handshake(fd);

    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    hsb_request hello = ti_hello("bounded");
    const uint32_t bt1[] = {0x80000001};
    ti_request(&out, bt1, 1, &hello);
    ti_write(fd, out.data, out.size);
    assert_int_equal(ti_reply(fd, bt1, 1, HSB_OP_HELLO, NULL), HSB_OK);

    msgpack_sbuffer_clear(&out);
    hsb_request fetch;
    memset(&fetch, 0, sizeof(fetch));
    fetch.op = HSB_OP_FETCH;
    fetch.u.fetch.max = 1;
    fetch.u.fetch.wait_ms = 1000;
    const uint32_t f1[] = {0x80000002}, f2[] = {0x80000003}, h2[] = {0x80000004};
    ti_request(&out, f1, 1, &fetch);
    ti_request(&out, f2, 1, &fetch);
    ti_request(&out, h2, 1, &hello); /* E_DENIED at once, once it gets a context */
    ti_write(fd, out.data, out.size);
    msgpack_sbuffer_destroy(&out);

    /* The first reply is a fetch (empty after wait_ms): the hello had to wait for its context. */
    uint8_t head[13];
    assert_int_equal(ti_read(fd, head, sizeof(head)), (ssize_t)sizeof(head));
    uint32_t first = ti_be32(head + 9);
    assert_true(first == f1[0] || first == f2[0]);
    /* Skip that reply's body, then the other two must both arrive. */
    uint64_t mlen = ti_be64(head + 1);
    uint8_t skip[256];
    assert_true(mlen - 4 <= sizeof(skip));
    assert_int_equal(ti_read(fd, skip, mlen - 4), (ssize_t)(mlen - 4));
    int seen_hello = 0, seen_fetch = 0;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(ti_read(fd, head, sizeof(head)), (ssize_t)sizeof(head));
        uint32_t id = ti_be32(head + 9);
        mlen = ti_be64(head + 1);
        assert_true(mlen - 4 <= sizeof(skip));
        assert_int_equal(ti_read(fd, skip, mlen - 4), (ssize_t)(mlen - 4));
        seen_hello += id == h2[0];
        seen_fetch += id == (first == f1[0] ? f2[0] : f1[0]);
    }
    assert_int_equal(seen_hello, 1);
    assert_int_equal(seen_fetch, 1);
    close(fd);
    assert_int_equal(ith_stop(&d, false), 0);
}

/* A socket file left by a daemon that was killed does not stop the next one from starting. */
static void t_stale_socket(void **state)
{
    (void)state;
    ith_daemon d;
    assert_true(ith_start(&d, NULL));
    ith_kill(&d);
    assert_int_equal(access(d.url + strlen("ipc://"), F_OK), 0); /* the file is still there */
    assert_true(ith_restart(&d, NULL));
    int fd = ti_connect(&d);
    ti_handshake(fd);
    close(fd);
    assert_int_equal(ith_stop(&d, false), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_wire),           cmocka_unit_test(t_many_pipelined),
        cmocka_unit_test(t_peer_gone),      cmocka_unit_test(t_durable_send_then_gone),
        cmocka_unit_test(t_wrong_peer),     cmocka_unit_test(t_oversized),
        cmocka_unit_test(t_contexts_bound), cmocka_unit_test(t_stale_socket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
