/*
 * hsbusctl - the operator CLI of hsbusd: sends one {cmd, args} request over the control socket
 * and prints the reply as aligned tables (default) or JSON (--json).
 *
 *   hsbusctl [-s URL | --run-dir DIR] [--json] [--watch SECONDS] [--timeout MS] CMD [ARGS]
 *
 * The commands, their arguments and their help come from the daemon's command table
 * (daemon/cmdtab.h), compiled in here without the handlers, so `hsbusctl help` never disagrees
 * with what the daemon accepts. Rendering is generic: a map prints as "key  value" lines (nested
 * maps as indented sections), an array of maps as a table whose columns are the maps' keys.
 *
 * Exit codes: 0 success; 1 the daemon refused or the command failed; 2 usage error;
 * 3 the daemon is not reachable (no socket, refused, permission denied, no reply in time).
 */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "daemon/cmdtab.h"
#include "proto/codec.h"

enum {
    CTL_EXIT_OK = 0,
    CTL_EXIT_FAILED = 1,
    CTL_EXIT_USAGE = 2,
    CTL_EXIT_UNREACHABLE = 3,
};

typedef struct ctl_opts {
    char url[1024];
    bool json;
    bool markdown;
    unsigned watch_s;
    unsigned timeout_ms;
} ctl_opts;

static volatile sig_atomic_t ctl_interrupted;

static void ctl_on_sigint(int sig)
{
    (void)sig;
    ctl_interrupted = 1;
}

/* ---- help -------------------------------------------------------------------------------- */

static void ctl_usage(FILE *out)
{
    fprintf(out, "usage: hsbusctl [options] COMMAND [ARGS]\n"
                 "  -s, --socket URL     control socket (default ipc://run/control.sock)\n"
                 "      --run-dir DIR    use ipc://DIR/control.sock (the daemon's run_dir)\n"
                 "  -j, --json           print the reply's data as JSON\n"
                 "  -w, --watch SECONDS  repeat a live view every SECONDS until interrupted\n"
                 "  -t, --timeout MS     wait at most MS for the reply (default 5000)\n"
                 "  -V, --version        print the version\n"
                 "  -h, --help           this text; `hsbusctl help [COMMAND]` lists the commands\n"
                 "Exit codes: 0 ok, 1 command failed, 2 usage error, 3 daemon not reachable.\n");
}

static void ctl_help(FILE *out, const char *only)
{
    char usage[128];

    if (only == NULL) {
        ctl_usage(out);
        fprintf(out, "\nCommands (* = live view, usable with --watch):\n");
    }
    for (size_t i = 0; i < cmdtab_count; i++) {
        const cmdtab_entry *e = &cmdtab[i];
        if (only != NULL && strcmp(only, e->name) != 0) {
            continue;
        }
        cmdtab_usage(e, usage, sizeof(usage));
        fprintf(out, "  %-30s %c %s\n", usage, (e->flags & CMDTAB_LIVE) ? '*' : ' ', e->help);
    }
}

/* The command list of docs/operations.md (a test checks the document against this output). */
static void ctl_help_markdown(FILE *out)
{
    char usage[128];

    fprintf(out, "| Command | Live view | What it does |\n|---|---|---|\n");
    for (size_t i = 0; i < cmdtab_count; i++) {
        const cmdtab_entry *e = &cmdtab[i];
        cmdtab_usage(e, usage, sizeof(usage));
        fprintf(out, "| `hsbusctl %s` | %s | %s |\n", usage, (e->flags & CMDTAB_LIVE) ? "yes" : "",
                e->help);
    }
}

/* ---- JSON -------------------------------------------------------------------------------- */

static void ctl_json_str(FILE *out, const char *s, size_t n)
{
    fputc('"', out);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"':
            fputs("\\\"", out);
            break;
        case '\\':
            fputs("\\\\", out);
            break;
        case '\n':
            fputs("\\n", out);
            break;
        case '\r':
            fputs("\\r", out);
            break;
        case '\t':
            fputs("\\t", out);
            break;
        default:
            if (c < 0x20 || c == 0x7f) {
                fprintf(out, "\\u%04x", c);
            } else {
                fputc(c, out); /* UTF-8 was validated by the decoder */
            }
        }
    }
    fputc('"', out);
}

static void ctl_json_b64(FILE *out, const unsigned char *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    fputc('"', out);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) {
            v |= (uint32_t)p[i + 1] << 8;
        }
        if (i + 2 < n) {
            v |= p[i + 2];
        }
        fputc(tab[(v >> 18) & 63], out);
        fputc(tab[(v >> 12) & 63], out);
        fputc(i + 1 < n ? tab[(v >> 6) & 63] : '=', out);
        fputc(i + 2 < n ? tab[v & 63] : '=', out);
    }
    fputc('"', out);
}

static void ctl_json_double(FILE *out, double d)
{
    if (!isfinite(d)) {
        fputs("null", out);
    } else if (d == floor(d) && fabs(d) < 1e15) {
        fprintf(out, "%.1f", d);
    } else {
        fprintf(out, "%.17g", d);
    }
}

/* ctl_json prints o as JSON. Bin values become base64 strings, ext values null; a non-string map
 * key is printed as the string of its JSON form. */
static void ctl_json(FILE *out, const msgpack_object *o, int indent)
{
    uint32_t i;

    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        fputs("null", out);
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        fputs(o->via.boolean ? "true" : "false", out);
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        fprintf(out, "%" PRIu64, o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        fprintf(out, "%" PRId64, o->via.i64);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        ctl_json_double(out, o->via.f64);
        break;
    case MSGPACK_OBJECT_STR:
        ctl_json_str(out, o->via.str.ptr, o->via.str.size);
        break;
    case MSGPACK_OBJECT_BIN:
        ctl_json_b64(out, (const unsigned char *)o->via.bin.ptr, o->via.bin.size);
        break;
    case MSGPACK_OBJECT_ARRAY:
        if (o->via.array.size == 0) {
            fputs("[]", out);
            break;
        }
        fputs("[\n", out);
        for (i = 0; i < o->via.array.size; i++) {
            fprintf(out, "%*s", indent + 2, "");
            ctl_json(out, &o->via.array.ptr[i], indent + 2);
            fputs(i + 1 < o->via.array.size ? ",\n" : "\n", out);
        }
        fprintf(out, "%*s]", indent, "");
        break;
    case MSGPACK_OBJECT_MAP:
        if (o->via.map.size == 0) {
            fputs("{}", out);
            break;
        }
        fputs("{\n", out);
        for (i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            fprintf(out, "%*s", indent + 2, "");
            if (kv->key.type == MSGPACK_OBJECT_STR) {
                ctl_json_str(out, kv->key.via.str.ptr, kv->key.via.str.size);
            } else {
                char *buf = NULL;
                size_t len = 0;
                FILE *mem = open_memstream(&buf, &len);
                if (mem != NULL) {
                    ctl_json(mem, &kv->key, 0);
                    fclose(mem);
                    ctl_json_str(out, buf, len);
                    free(buf);
                } else {
                    fputs("\"?\"", out);
                }
            }
            fputs(": ", out);
            ctl_json(out, &kv->val, indent + 2);
            fputs(i + 1 < o->via.map.size ? ",\n" : "\n", out);
        }
        fprintf(out, "%*s}", indent, "");
        break;
    default:
        fputs("null", out);
        break;
    }
}

/* ---- tables ------------------------------------------------------------------------------ */

static bool ctl_scalar(const msgpack_object *o)
{
    return o->type != MSGPACK_OBJECT_ARRAY && o->type != MSGPACK_OBJECT_MAP;
}

static bool ctl_numeric(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
           o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER || o->type == MSGPACK_OBJECT_FLOAT32 ||
           o->type == MSGPACK_OBJECT_FLOAT64;
}

/* ctl_cell formats a scalar (or a short summary of a container) into buf. */
static void ctl_cell(const msgpack_object *o, char *buf, size_t len)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        snprintf(buf, len, "-");
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        snprintf(buf, len, "%s", o->via.boolean ? "yes" : "no");
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        snprintf(buf, len, "%" PRIu64, o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        snprintf(buf, len, "%" PRId64, o->via.i64);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        snprintf(buf, len, "%.6g", o->via.f64);
        break;
    case MSGPACK_OBJECT_STR:
        snprintf(buf, len, "%.*s", (int)o->via.str.size, o->via.str.ptr);
        if (o->via.str.size == 0) {
            snprintf(buf, len, "-");
        }
        break;
    case MSGPACK_OBJECT_BIN:
        snprintf(buf, len, "<%u bytes>", o->via.bin.size);
        break;
    case MSGPACK_OBJECT_ARRAY: {
        /* A list of scalars reads best joined; anything else is summarised. */
        size_t off = 0;
        buf[0] = '\0';
        if (o->via.array.size == 0) {
            snprintf(buf, len, "-");
            break;
        }
        for (uint32_t i = 0; i < o->via.array.size && off + 1 < len; i++) {
            char cell[256];
            if (!ctl_scalar(&o->via.array.ptr[i])) {
                snprintf(buf, len, "<%u items>", o->via.array.size);
                return;
            }
            ctl_cell(&o->via.array.ptr[i], cell, sizeof(cell));
            off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "", cell);
        }
        break;
    }
    default:
        snprintf(buf, len, "<%s>", o->type == MSGPACK_OBJECT_MAP ? "map" : "value");
        break;
    }
}

/* ctl_table prints an array of maps as an aligned table; columns are the first row's keys. */
static void ctl_table(FILE *out, const msgpack_object *arr, int indent)
{
    const msgpack_object *first = &arr->via.array.ptr[0];
    uint32_t ncol = first->via.map.size, nrow = arr->via.array.size;
    size_t *width = calloc(ncol, sizeof(*width));
    bool *right = calloc(ncol, sizeof(*right));
    char cell[512];

    if (width == NULL || right == NULL) {
        free(width);
        free(right);
        return;
    }
    for (uint32_t c = 0; c < ncol; c++) {
        const msgpack_object *k = &first->via.map.ptr[c].key;
        width[c] = k->type == MSGPACK_OBJECT_STR ? k->via.str.size : 1;
        right[c] = true;
    }
    for (uint32_t r = 0; r < nrow; r++) {
        const msgpack_object *row = &arr->via.array.ptr[r];
        for (uint32_t c = 0; c < ncol && row->type == MSGPACK_OBJECT_MAP && c < row->via.map.size;
             c++) {
            ctl_cell(&row->via.map.ptr[c].val, cell, sizeof(cell));
            if (strlen(cell) > width[c]) {
                width[c] = strlen(cell);
            }
            if (!ctl_numeric(&row->via.map.ptr[c].val)) {
                right[c] = false;
            }
        }
    }
    fprintf(out, "%*s", indent, "");
    for (uint32_t c = 0; c < ncol; c++) {
        const msgpack_object *k = &first->via.map.ptr[c].key;
        char name[128];
        snprintf(name, sizeof(name), "%.*s",
                 k->type == MSGPACK_OBJECT_STR ? (int)k->via.str.size : 1,
                 k->type == MSGPACK_OBJECT_STR ? k->via.str.ptr : "?");
        for (char *p = name; *p; p++) {
            *p = (*p >= 'a' && *p <= 'z') ? (char)(*p - 32) : *p;
        }
        fprintf(out, right[c] ? "%*s" : "%-*s", (int)width[c], name);
        fputs(c + 1 < ncol ? "  " : "\n", out);
    }
    for (uint32_t r = 0; r < nrow; r++) {
        const msgpack_object *row = &arr->via.array.ptr[r];
        fprintf(out, "%*s", indent, "");
        for (uint32_t c = 0; c < ncol; c++) {
            if (row->type == MSGPACK_OBJECT_MAP && c < row->via.map.size) {
                ctl_cell(&row->via.map.ptr[c].val, cell, sizeof(cell));
            } else {
                snprintf(cell, sizeof(cell), "-");
            }
            if (c + 1 < ncol) {
                fprintf(out, right[c] ? "%*s  " : "%-*s  ", (int)width[c], cell);
            } else if (right[c]) {
                fprintf(out, "%*s\n", (int)width[c], cell);
            } else {
                fprintf(out, "%s\n", cell);
            }
        }
    }
    free(width);
    free(right);
}

static bool ctl_is_table(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size > 0 &&
           o->via.array.ptr[0].type == MSGPACK_OBJECT_MAP && o->via.array.ptr[0].via.map.size > 0;
}

static void ctl_render(FILE *out, const msgpack_object *o, int indent)
{
    char cell[1024];

    if (ctl_is_table(o)) {
        ctl_table(out, o, indent);
        return;
    }
    if (o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 0) {
        fprintf(out, "%*s(none)\n", indent, "");
        return;
    }
    if (o->type != MSGPACK_OBJECT_MAP) {
        ctl_cell(o, cell, sizeof(cell));
        fprintf(out, "%*s%s\n", indent, "", cell);
        return;
    }
    size_t kw = 0;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size > kw) {
            kw = k->via.str.size;
        }
    }
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        char key[128];
        ctl_cell(&kv->key, key, sizeof(key));
        if (ctl_is_table(&kv->val) || kv->val.type == MSGPACK_OBJECT_MAP) {
            fprintf(out, "%*s%s:\n", indent, "", key);
            ctl_render(out, &kv->val, indent + 2);
            continue;
        }
        ctl_cell(&kv->val, cell, sizeof(cell));
        fprintf(out, "%*s%-*s  %s\n", indent, "", (int)kw, key, cell);
    }
}

/* ---- the request ------------------------------------------------------------------------- */

static nng_socket ctl_sock;
static bool ctl_connected;

static int ctl_connect(const ctl_opts *o)
{
    int rv;

    if ((rv = nng_req0_open(&ctl_sock)) != 0) {
        fprintf(stderr, "hsbusctl: %s\n", nng_strerror(rv));
        return CTL_EXIT_FAILED;
    }
    nng_socket_set_ms(ctl_sock, NNG_OPT_RECVTIMEO, (nng_duration)o->timeout_ms);
    nng_socket_set_ms(ctl_sock, NNG_OPT_SENDTIMEO, (nng_duration)o->timeout_ms);
    nng_socket_set_ms(ctl_sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    nng_socket_set_size(ctl_sock, NNG_OPT_RECVMAXSZ, 64u << 20);
    if ((rv = nng_dial(ctl_sock, o->url, NULL, 0)) != 0) {
        if (rv == NNG_EPERM) {
            fprintf(stderr,
                    "hsbusctl: cannot connect to %s: permission denied (the control socket is "
                    "mode 0600: run as the daemon's user or root)\n",
                    o->url);
        } else if (rv == NNG_EADDRINVAL || rv == NNG_ENOTSUP) {
            fprintf(stderr, "hsbusctl: cannot connect to %s: %s (bad URL?)\n", o->url,
                    nng_strerror(rv));
        } else {
            fprintf(stderr, "hsbusctl: cannot connect to %s: %s: is hsbusd running?\n", o->url,
                    nng_strerror(rv));
        }
        nng_close(ctl_sock);
        return CTL_EXIT_UNREACHABLE;
    }
    ctl_connected = true;
    return CTL_EXIT_OK;
}

/* ctl_call sends the request and prints the reply. Returns an exit code. */
static int ctl_call(const ctl_opts *o, const hsb_ctl_request *req, const char *what)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    hsb_ctl_reply rep;
    hsb_dec dec;
    char *buf = NULL;
    size_t len = 0;
    int rc = CTL_EXIT_FAILED;
    int rv;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (hsb_enc_ctl_request(&pk, req) != HSB_OK) {
        fprintf(stderr, "hsbusctl: out of memory\n");
        msgpack_sbuffer_destroy(&sb);
        return CTL_EXIT_FAILED;
    }
    rv = nng_send(ctl_sock, sb.data, sb.size, 0);
    msgpack_sbuffer_destroy(&sb);
    if (rv == 0) {
        rv = nng_recv(ctl_sock, &buf, &len, NNG_FLAG_ALLOC);
    }
    if (rv != 0) {
        if (rv == NNG_ETIMEDOUT) {
            fprintf(stderr, "hsbusctl: no reply from %s within %u ms: is hsbusd running?\n", o->url,
                    o->timeout_ms);
        } else {
            fprintf(stderr, "hsbusctl: %s: %s: is hsbusd running?\n", o->url, nng_strerror(rv));
        }
        return CTL_EXIT_UNREACHABLE;
    }
    if (hsb_dec_init(&dec) != HSB_OK) {
        nng_free(buf, len);
        return CTL_EXIT_FAILED;
    }
    if (hsb_dec_ctl_reply(&dec, buf, len, &rep) != HSB_OK) {
        fprintf(stderr, "hsbusctl: malformed reply from the daemon: %s\n", hsb_dec_errmsg(&dec));
        goto out;
    }
    if (!rep.ok) {
        if (o->json) {
            fputs("{\n  \"ok\": false,\n  \"err\": ", stdout);
            ctl_json_str(stdout, hsb_err_wire(rep.err), strlen(hsb_err_wire(rep.err)));
            fputs(",\n  \"msg\": ", stdout);
            ctl_json_str(stdout, rep.msg ? rep.msg : "", rep.msg ? strlen(rep.msg) : 0);
            fputs("\n}\n", stdout);
        }
        if (rep.err == HSB_EDENIED) {
            fprintf(stderr, "hsbusctl: %s: denied: %s\n", what, rep.msg ? rep.msg : "");
        } else {
            fprintf(stderr, "hsbusctl: %s: %s\n", what,
                    rep.msg != NULL && rep.msg[0] ? rep.msg : hsb_err_wire(rep.err));
        }
        goto out;
    }
    if (o->json) {
        ctl_json(stdout, &rep.data, 0);
        fputc('\n', stdout);
    } else {
        ctl_render(stdout, &rep.data, 0);
    }
    fflush(stdout);
    rc = CTL_EXIT_OK;
out:
    hsb_dec_fini(&dec);
    nng_free(buf, len);
    return rc;
}

static int ctl_watch(const ctl_opts *o, const hsb_ctl_request *req, const char *line,
                     const char *what)
{
    struct sigaction sa;
    int rc = CTL_EXIT_OK;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = ctl_on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    while (!ctl_interrupted) {
        time_t now = time(NULL);
        char ts[64];
        strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", localtime(&now));
        if (!o->json) {
            fputs("\033[H\033[2J", stdout);
            printf("Every %us: hsbusctl %s    %s\n\n", o->watch_s, line, ts);
        }
        rc = ctl_call(o, req, what);
        fflush(stdout);
        if (rc == CTL_EXIT_UNREACHABLE) {
            return rc;
        }
        struct timespec d = {(time_t)o->watch_s, 0};
        while (!ctl_interrupted && nanosleep(&d, &d) != 0) {
        }
    }
    return rc == CTL_EXIT_FAILED ? rc : CTL_EXIT_OK;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'},
        {"run-dir", required_argument, NULL, 'r'},
        {"json", no_argument, NULL, 'j'},
        {"watch", required_argument, NULL, 'w'},
        {"timeout", required_argument, NULL, 't'},
        {"markdown", no_argument, NULL, 'm'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    ctl_opts o;
    hsb_ctl_request req;
    const cmdtab_entry *e;
    char line[512] = "";
    char what[96];
    char *end;
    size_t rest;
    bool known;
    int ch, rc;

    memset(&o, 0, sizeof(o));
    snprintf(o.url, sizeof(o.url), "ipc://run/control.sock");
    o.timeout_ms = 5000;
    while ((ch = getopt_long(argc, argv, "s:jw:t:Vh", longopts, NULL)) != -1) {
        switch (ch) {
        case 's':
            snprintf(o.url, sizeof(o.url), "%s", optarg);
            break;
        case 'r':
            snprintf(o.url, sizeof(o.url), "ipc://%s/control.sock", optarg);
            break;
        case 'j':
            o.json = true;
            break;
        case 'm':
            o.markdown = true;
            break;
        case 'w':
            o.watch_s = (unsigned)strtoul(optarg, &end, 10);
            if (*end != '\0' || o.watch_s == 0 || o.watch_s > 86400) {
                fprintf(stderr, "hsbusctl: --watch wants whole seconds, 1..86400\n");
                return CTL_EXIT_USAGE;
            }
            break;
        case 't':
            o.timeout_ms = (unsigned)strtoul(optarg, &end, 10);
            if (*end != '\0' || o.timeout_ms == 0) {
                fprintf(stderr, "hsbusctl: --timeout wants milliseconds > 0\n");
                return CTL_EXIT_USAGE;
            }
            break;
        case 'V':
            printf("hsbusctl %s\n", HSB_VERSION);
            return CTL_EXIT_OK;
        case 'h':
            ctl_help(stdout, NULL);
            return CTL_EXIT_OK;
        default:
            ctl_usage(stderr);
            return CTL_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        ctl_usage(stderr);
        return CTL_EXIT_USAGE;
    }
    if (strcmp(argv[optind], "help") == 0) {
        if (o.markdown) {
            ctl_help_markdown(stdout);
            return CTL_EXIT_OK;
        }
        if (optind + 1 < argc) {
            cmdtab_find(argv[optind + 1], NULL, 0, &rest, &known);
            if (!known) {
                fprintf(stderr, "hsbusctl: unknown command \"%s\" (try hsbusctl help)\n",
                        argv[optind + 1]);
                return CTL_EXIT_USAGE;
            }
            ctl_help(stdout, argv[optind + 1]);
            return CTL_EXIT_OK;
        }
        ctl_help(stdout, NULL);
        return CTL_EXIT_OK;
    }

    memset(&req, 0, sizeof(req));
    if (strlen(argv[optind]) > HSB_CTL_CMD_MAX) {
        fprintf(stderr, "hsbusctl: unknown command \"%s\" (try hsbusctl help)\n", argv[optind]);
        return CTL_EXIT_USAGE;
    }
    snprintf(req.cmd, sizeof(req.cmd), "%s", argv[optind]);
    for (int i = optind + 1; i < argc; i++) {
        if (req.n_args == HSB_CTL_ARGS_MAX) {
            fprintf(stderr, "hsbusctl: too many arguments\n");
            return CTL_EXIT_USAGE;
        }
        req.args[req.n_args++] = argv[i];
    }
    for (int i = optind; i < argc; i++) {
        size_t off = strlen(line);
        snprintf(line + off, sizeof(line) - off, "%s%s", i > optind ? " " : "", argv[i]);
    }
    e = cmdtab_find(req.cmd, req.args, req.n_args, &rest, &known);
    if (e == NULL) {
        if (known) {
            fprintf(stderr, "hsbusctl: %s: unknown or missing sub-command; one of:\n", req.cmd);
            ctl_help(stderr, req.cmd);
        } else {
            fprintf(stderr, "hsbusctl: unknown command \"%s\" (try hsbusctl help)\n", req.cmd);
        }
        return CTL_EXIT_USAGE;
    }
    if (req.n_args - rest < e->min_args || req.n_args - rest > e->max_args) {
        char usage[128];
        cmdtab_usage(e, usage, sizeof(usage));
        fprintf(stderr, "hsbusctl: usage: hsbusctl %s\n", usage);
        return CTL_EXIT_USAGE;
    }
    if (o.watch_s > 0 && !(e->flags & CMDTAB_LIVE)) {
        fprintf(stderr, "hsbusctl: --watch works with live views only (status, agents, queues, "
                        "breakers, stats, cache stats)\n");
        return CTL_EXIT_USAGE;
    }

    rc = ctl_connect(&o);
    if (rc != CTL_EXIT_OK) {
        return rc;
    }
    snprintf(what, sizeof(what), "%s%s%s", e->name, e->sub != NULL ? " " : "",
             e->sub != NULL ? e->sub : "");
    rc = o.watch_s > 0 ? ctl_watch(&o, &req, line, what) : ctl_call(&o, &req, what);
    if (ctl_connected) {
        nng_close(ctl_sock);
    }
    return rc;
}
