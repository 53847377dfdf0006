/*
 * benches/bench_codec.c - bench-codec: the cost of the wire codec against plain msgpack-c.
 *
 * One iteration encodes a `send` request holding one envelope (cid, to, type, prio, ttl_ms, batch,
 * corr and a 256-byte bin body) and decodes it again, on one core:
 *   ours: hsb_enc_request into a reused msgpack_sbuffer, then hsb_dec_request with a reused
 *         decoder (structural scan, unpack, full validation, copies into the decoder's zone);
 *   ref:  the same map packed with msgpack_pack_* into a reused msgpack_sbuffer, then
 *         msgpack_unpack into a reused zone, with no validation and no copies.
 * The reference is measured in the same run, interleaved with ours round by round (the order
 * alternates), so that a noisy machine slows both alike. Time is the thread's CPU time, so that
 * being descheduled does not count. The best round of each is reported, and the median of the
 * per-round ratios beside it.
 *
 * Usage: bench-codec [--short] [--rounds N]. Prints one human line and one JSON line on stdout.
 * Exit status 0, or 1 if a decode fails (the numbers would be meaningless).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto/codec.h"

#define BENCH_CODEC_BODY   256
#define BENCH_CODEC_ROUNDS 15

static uint8_t bench_codec_body_bytes[BENCH_CODEC_BODY];

static double bench_codec_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The body as one encoded msgpack value: a bin 16 header and 256 bytes. */
static msgpack_sbuffer bench_codec_body;

static void bench_codec_setup(hsb_envelope *env)
{
    msgpack_packer pk;
    size_t i;

    for (i = 0; i < BENCH_CODEC_BODY; i++) {
        bench_codec_body_bytes[i] = (uint8_t)(i * 131u + 7u);
    }
    msgpack_sbuffer_init(&bench_codec_body);
    msgpack_packer_init(&pk, &bench_codec_body, msgpack_sbuffer_write);
    msgpack_pack_bin_with_body(&pk, bench_codec_body_bytes, BENCH_CODEC_BODY);

    hsb_envelope_init(env);
    strcpy(env->cid, "bench-0000000042");
    strcpy(env->to, "echo");
    strcpy(env->type, "lab.result");
    strcpy(env->batch, "ward-7");
    env->prio = HSB_PRIO_HIGH;
    env->ttl_ms = 30000;
    env->corr = 123456789;
    env->body = (const uint8_t *)bench_codec_body.data;
    env->body_len = bench_codec_body.size;
}

static void bench_codec_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
    msgpack_pack_str_with_body(pk, k, strlen(k));
    msgpack_pack_str_with_body(pk, v, strlen(v));
}

/* The reference: the same map, packed by hand, unpacked without validation. */
static int bench_codec_ref(uint64_t n, msgpack_sbuffer *sb, msgpack_zone *zone,
                           const hsb_envelope *env)
{
    msgpack_packer pk;
    msgpack_object obj;
    uint64_t i;
    int bad = 0;

    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    for (i = 0; i < n; i++) {
        size_t off = 0;

        msgpack_sbuffer_clear(sb);
        msgpack_pack_map(&pk, 2);
        bench_codec_kv_str(&pk, "op", "send");
        msgpack_pack_str_with_body(&pk, "msgs", 4);
        msgpack_pack_array(&pk, 1);
        msgpack_pack_map(&pk, 8);
        bench_codec_kv_str(&pk, "cid", env->cid);
        bench_codec_kv_str(&pk, "to", env->to);
        bench_codec_kv_str(&pk, "type", env->type);
        msgpack_pack_str_with_body(&pk, "prio", 4);
        msgpack_pack_uint8(&pk, env->prio);
        msgpack_pack_str_with_body(&pk, "ttl_ms", 6);
        msgpack_pack_uint32(&pk, env->ttl_ms);
        bench_codec_kv_str(&pk, "batch", env->batch);
        msgpack_pack_str_with_body(&pk, "corr", 4);
        msgpack_pack_uint64(&pk, env->corr);
        msgpack_pack_str_with_body(&pk, "body", 4);
        msgpack_pack_bin_with_body(&pk, bench_codec_body_bytes, BENCH_CODEC_BODY);

        msgpack_zone_clear(zone);
        if (msgpack_unpack(sb->data, sb->size, &off, zone, &obj) != MSGPACK_UNPACK_SUCCESS ||
            obj.type != MSGPACK_OBJECT_MAP) {
            bad = 1;
        }
    }
    return bad;
}

static int bench_codec_ours(uint64_t n, msgpack_sbuffer *sb, hsb_dec *dec, hsb_envelope *env)
{
    msgpack_packer pk;
    hsb_request req, out;
    uint64_t i;
    int bad = 0;

    memset(&req, 0, sizeof(req));
    req.op = HSB_OP_SEND;
    req.u.send.msgs = env;
    req.u.send.n_msgs = 1;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    for (i = 0; i < n; i++) {
        msgpack_sbuffer_clear(sb);
        if (hsb_enc_request(&pk, &req) != HSB_OK ||
            hsb_dec_request(dec, sb->data, sb->size, &out) != HSB_OK || out.u.send.n_msgs != 1 ||
            out.u.send.msgs[0].body_len != env->body_len) {
            bad = 1;
        }
    }
    if (bad) {
        fprintf(stderr, "bench-codec: decode failed: %s\n", hsb_dec_errmsg(dec));
    }
    return bad;
}

static int bench_codec_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    bool short_form = false;
    int rounds = BENCH_CODEC_ROUNDS;
    double ours_best = 0, ref_best = 0, ratios[64];
    msgpack_sbuffer sb_ours, sb_ref;
    msgpack_zone zone;
    hsb_envelope env;
    hsb_dec dec;
    uint64_t n;
    double t0, per;
    int i, rc = 0;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--short") == 0) {
            short_form = true;
        } else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
            rounds = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: bench-codec [--short] [--rounds N]\n");
            return 2;
        }
    }
    if (short_form) {
        rounds = 3;
    }
    if (rounds < 1 || rounds > 64) {
        rounds = BENCH_CODEC_ROUNDS;
    }

    bench_codec_setup(&env);
    msgpack_sbuffer_init(&sb_ours);
    msgpack_sbuffer_init(&sb_ref);
    if (!msgpack_zone_init(&zone, 64 * 1024) || hsb_dec_init(&dec) != HSB_OK) {
        fprintf(stderr, "bench-codec: out of memory\n");
        return 1;
    }

    /* Warm up both paths and size a round to about 0.1 s of our codec. */
    n = short_form ? 2000 : 20000;
    t0 = bench_codec_now();
    rc |= bench_codec_ours(n, &sb_ours, &dec, &env);
    per = (bench_codec_now() - t0) / (double)n;
    rc |= bench_codec_ref(n, &sb_ref, &zone, &env);
    if (!short_form) {
        n = (uint64_t)(0.1 / (per > 1e-9 ? per : 1e-9));
    }

    for (i = 0; i < rounds && rc == 0; i++) {
        double t_ours, t_ref, r_ours, r_ref;
        if (i % 2 == 0) {
            t0 = bench_codec_now();
            rc |= bench_codec_ours(n, &sb_ours, &dec, &env);
            t_ours = bench_codec_now() - t0;
            t0 = bench_codec_now();
            rc |= bench_codec_ref(n, &sb_ref, &zone, &env);
            t_ref = bench_codec_now() - t0;
        } else {
            t0 = bench_codec_now();
            rc |= bench_codec_ref(n, &sb_ref, &zone, &env);
            t_ref = bench_codec_now() - t0;
            t0 = bench_codec_now();
            rc |= bench_codec_ours(n, &sb_ours, &dec, &env);
            t_ours = bench_codec_now() - t0;
        }
        r_ours = (double)n / t_ours;
        r_ref = (double)n / t_ref;
        ratios[i] = r_ours / r_ref;
        if (r_ours > ours_best) {
            ours_best = r_ours;
        }
        if (r_ref > ref_best) {
            ref_best = r_ref;
        }
    }
    if (rc != 0) {
        fprintf(stderr, "bench-codec: a decode failed; no result\n");
        goto cleanup;
    }
    qsort(ratios, (size_t)rounds, sizeof(ratios[0]), bench_codec_cmp);
    printf("bench-codec: send(1 envelope, %d-byte body) encode+decode: ours %.0f/s, "
           "msgpack-c reference %.0f/s, ratio %.3f (median of %d rounds %.3f, %zu bytes/msg)\n",
           BENCH_CODEC_BODY, ours_best, ref_best, ours_best / ref_best, rounds, ratios[rounds / 2],
           sb_ours.size);
    printf("{\"bench\":\"codec\",\"ours_per_s\":%.0f,\"ref_per_s\":%.0f,\"ratio\":%.4f,"
           "\"median_ratio\":%.4f,\"rounds\":%d,\"iterations\":%llu,\"bytes\":%zu}\n",
           ours_best, ref_best, ours_best / ref_best, ratios[rounds / 2], rounds,
           (unsigned long long)n, sb_ours.size);

cleanup:
    hsb_dec_fini(&dec);
    msgpack_zone_destroy(&zone);
    msgpack_sbuffer_destroy(&sb_ours);
    msgpack_sbuffer_destroy(&sb_ref);
    msgpack_sbuffer_destroy(&bench_codec_body);
    return rc;
}
