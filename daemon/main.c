/*
 * daemon/main.c - hsbusd: parse flags, load the config, run the server.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config.h"
#include "daemon/log.h"
#include "daemon/server.h"

#define MAIN_SETS_MAX 128

static void main_usage(FILE *out)
{
    fprintf(out,
            "usage: hsbusd [options]\n"
            "  -c, --config FILE      load FILE (INI); without it the embedded defaults apply\n"
            "  -s, --set SEC.KEY=VAL  override one key (repeatable), e.g. --set bus.batch_max=32\n"
            "  -r, --run-dir DIR      sockets directory (default run/)\n"
            "  -d, --data-dir DIR     database directory (default var/)\n"
            "  -l, --log-level LEVEL  debug, info, warn or error\n"
            "      --check-config     load and validate the config, then exit\n"
            "      --print-config     print every key with its value and description\n"
            "  -V, --version          print the version\n"
            "  -h, --help             this text\n"
            "Signals: SIGTERM/SIGINT drain and exit 0; SIGHUP reloads the config file.\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"set", required_argument, NULL, 's'},
        {"run-dir", required_argument, NULL, 'r'},
        {"data-dir", required_argument, NULL, 'd'},
        {"log-level", required_argument, NULL, 'l'},
        {"check-config", no_argument, NULL, 'C'},
        {"print-config", no_argument, NULL, 'P'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const char *sets[MAIN_SETS_MAX];
    static char extra[3][CONFIG_PATH_MAX + 32];
    size_t n_sets = 0;
    const char *file = NULL;
    bool check_only = false, print = false;
    int ch;

    while ((ch = getopt_long(argc, argv, "c:s:r:d:l:Vh", opts, NULL)) != -1) {
        if ((ch == 's' || ch == 'r' || ch == 'd' || ch == 'l') && n_sets == MAIN_SETS_MAX) {
            fprintf(stderr, "hsbusd: too many overrides\n");
            return 2;
        }
        switch (ch) {
        case 'c':
            file = optarg;
            break;
        case 's':
            sets[n_sets++] = optarg;
            break;
        case 'r':
            snprintf(extra[0], sizeof(extra[0]), "daemon.run_dir=%s", optarg);
            sets[n_sets++] = extra[0];
            break;
        case 'd':
            snprintf(extra[1], sizeof(extra[1]), "daemon.data_dir=%s", optarg);
            sets[n_sets++] = extra[1];
            break;
        case 'l':
            snprintf(extra[2], sizeof(extra[2]), "daemon.log_level=%s", optarg);
            sets[n_sets++] = extra[2];
            break;
        case 'C':
            check_only = true;
            break;
        case 'P':
            print = true;
            break;
        case 'V':
            printf("hsbusd %s\n", HSB_VERSION);
            return 0;
        case 'h':
            main_usage(stdout);
            return 0;
        default:
            main_usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "hsbusd: unexpected argument: %s\n", argv[optind]);
        main_usage(stderr);
        return 2;
    }

    static config cfg;
    char err[600];
    if (config_load(&cfg, file, sets, n_sets, err, sizeof(err)) != HSB_OK) {
        fprintf(stderr, "hsbusd: config: %s\n", err);
        return 2;
    }
    if (print) {
        config_print(&cfg, stdout);
        return 0;
    }
    if (check_only) {
        printf("hsbusd: config ok (%s)\n", file ? file : "embedded defaults");
        return 0;
    }

    static srv s;
    if (srv_init(&s, &cfg, sets, n_sets) != HSB_OK) {
        log_error("start_failed", NULL);
        return 1;
    }
    int code = srv_run(&s);
    if (!srv_fini(&s)) {
        return 1;
    }
    return code;
}
