/*
 * tests/unit/test_daemon_config.c - daemon/config.c: defaults, file parsing, errors with file and
 * line, overrides, agent sections and options, and the reload diff.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/config.h"

static config cfg, cfg2;
static char err[600];

/* The temporary files of the current test; tc_cleanup removes them. */
static char tc_paths[8][32];
static int tc_n;

/* Writes text to a new temporary file and returns its path. */
static const char *tc_file(const char *text)
{
    assert_true(tc_n < 8);
    char *path = tc_paths[tc_n++];
    snprintf(path, sizeof(tc_paths[0]), "/tmp/hsbus-conf-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static int tc_cleanup(void **state)
{
    (void)state;
    for (int i = 0; i < tc_n; i++) {
        unlink(tc_paths[i]);
    }
    tc_n = 0;
    return 0;
}

static void test_defaults_without_file(void **state)
{
    (void)state;
    assert_int_equal(config_load(&cfg, NULL, NULL, 0, err, sizeof(err)), HSB_OK);
    assert_string_equal(cfg.run_dir, "run");
    assert_string_equal(cfg.listen, "ipc://run/agents.sock");
    assert_string_equal(cfg.control_listen, "ipc://run/control.sock");
    assert_string_equal(cfg.store_path, "var/hsbus.db");
    assert_int_equal(cfg.bus.batch_max, 64);
    assert_int_equal(cfg.bus.batch_linger_ms, 2);
    assert_int_equal(cfg.bus.weights[0], 4);
    assert_int_equal(cfg.bus.weights[1], 2);
    assert_int_equal(cfg.bus.weights[2], 1);
    assert_int_equal(cfg.bus.agent_defaults.max_deliveries, 5);
    assert_int_equal(cfg.bus.agent_defaults.breaker.failure_threshold, 5);
    assert_int_equal(cfg.bus.agent_defaults.breaker.recovery_timeout_ms, 60000);
    assert_int_equal(cfg.max_body, 1048576);
    /* The embedded echo agent. */
    const config_agent *echo = config_agent_find(&cfg, "echo");
    assert_non_null(echo);
    assert_string_equal(echo->builtin, "echo");
    assert_true(echo->enabled);
    assert_int_equal(echo->workers, 1);
}

static void test_file_sets_values_and_agent_inherits_bus(void **state)
{
    (void)state;
    const char *f = tc_file("[daemon]\nrun_dir = /tmp/r\n"
                            "[agent.lab]\n"
                            "token = abc\n"
                            "max_deliveries = 9\n"
                            "[bus]\nbatch_max = 32\nbreaker_failure_threshold = 7\n");
    assert_int_equal(config_load(&cfg, f, NULL, 0, err, sizeof(err)), HSB_OK);
    assert_string_equal(cfg.listen, "ipc:///tmp/r/agents.sock");
    assert_int_equal(cfg.bus.batch_max, 32);
    const config_agent *lab = config_agent_find(&cfg, "lab");
    assert_non_null(lab);
    assert_string_equal(lab->token, "abc");
    assert_int_equal(lab->bus.max_deliveries, 9);
    /* Not set in the agent's section: taken from [bus], even though [bus] came later. */
    assert_int_equal(lab->bus.breaker.failure_threshold, 7);
}

static void test_unknown_key_names_file_and_line(void **state)
{
    (void)state;
    const char *f = tc_file("[bus]\nbatch_max = 8\n\nbatch_maxx = 9\n");
    assert_int_equal(config_load(&cfg, f, NULL, 0, err, sizeof(err)), HSB_EINVAL);
    char want[128];
    snprintf(want, sizeof(want), "%s:4: [bus] batch_maxx: unknown key", f);
    assert_string_equal(err, want);
}

static void test_bad_values_are_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "[bus]\nbatch_max = 0\n",             /* below range */
        "[bus]\nbatch_max = -3\n",            /* negative */
        "[bus]\nbatch_max = 12abc\n",         /* not a number */
        "[store]\nsynchronous = sometimes\n", /* not an enum value */
        "[daemon]\nlog_level = loud\n",       /* not a level */
        "[metrics]\nenabled = maybe\n",       /* not a bool */
        "[agent.Bad]\nworkers = 1\n",         /* agent name outside the pattern */
        "[nosuch]\nkey = 1\n",                /* unknown section */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *f = tc_file(bad[i]);
        assert_int_equal(config_load(&cfg, f, NULL, 0, err, sizeof(err)), HSB_EINVAL);
        assert_non_null(strstr(err, f)); /* every error names the file */
    }
}

static void test_section_without_keys_declares_agent(void **state)
{
    (void)state;
    const char *f = tc_file("[agent.lab]\n\n[ agent.portal ]\n; nothing but a comment\n");
    assert_int_equal(config_load(&cfg, f, NULL, 0, err, sizeof(err)), HSB_OK);
    const config_agent *lab = config_agent_find(&cfg, "lab");
    assert_non_null(lab);
    assert_int_equal(lab->line, 1);
    assert_int_equal(lab->bus.max_deliveries, 5); /* the [bus] default */
    assert_non_null(config_agent_find(&cfg, "portal"));
    /* A bad name is refused even without keys, with its line. */
    const char *g = tc_file("[bus]\nbatch_max = 8\n[agent.Bad Name]\n");
    assert_int_equal(config_load(&cfg, g, NULL, 0, err, sizeof(err)), HSB_EINVAL);
    char want[96];
    snprintf(want, sizeof(want), "%s:3:", g);
    assert_non_null(strstr(err, want));
}

static void test_missing_file(void **state)
{
    (void)state;
    assert_int_equal(config_load(&cfg, "/nonexistent/hsbusd.conf", NULL, 0, err, sizeof(err)),
                     HSB_EINVAL);
    assert_non_null(strstr(err, "cannot open"));
}

static void test_overrides_win_and_create_agents(void **state)
{
    (void)state;
    const char *f = tc_file("[bus]\nbatch_max = 32\n");
    const char *sets[] = {"bus.batch_max=16", "agent.echo.fail_pct=50",
                          "agent.new.queue_max_msgs=5"};
    assert_int_equal(config_load(&cfg, f, sets, 3, err, sizeof(err)), HSB_OK);
    assert_int_equal(cfg.bus.batch_max, 16);
    const config_agent *echo = config_agent_find(&cfg, "echo");
    assert_string_equal(config_agent_option(echo, "fail_pct"), "50");
    assert_null(config_agent_option(echo, "delay_ms"));
    const config_agent *nw = config_agent_find(&cfg, "new");
    assert_non_null(nw);
    assert_int_equal(nw->bus.queue_max_msgs, 5);

    const char *badset[] = {"no-dot-here"};
    assert_int_equal(config_load(&cfg, NULL, badset, 1, err, sizeof(err)), HSB_EINVAL);
    assert_non_null(strstr(err, "section.key=value"));
}

static void test_diff_live_and_restart(void **state)
{
    (void)state;
    const char *a = tc_file("[bus]\nbatch_max = 32\n[daemon]\nrun_dir = r1\n"
                            "[agent.x]\nbreaker_failure_threshold = 3\n");
    const char *b = tc_file("[bus]\nbatch_max = 16\n[daemon]\nrun_dir = r2\n"
                            "[agent.x]\nbreaker_failure_threshold = 9\n[agent.y]\n");
    assert_int_equal(config_load(&cfg, a, NULL, 0, err, sizeof(err)), HSB_OK);
    assert_int_equal(config_load(&cfg2, b, NULL, 0, err, sizeof(err)), HSB_OK);
    char live[512], restart[512];
    size_t n = config_diff(&cfg, &cfg2, live, sizeof(live), restart, sizeof(restart));
    assert_non_null(strstr(live, "bus.batch_max"));
    assert_non_null(strstr(live, "agent.x.breaker_failure_threshold"));
    assert_non_null(strstr(restart, "daemon.run_dir"));
    assert_non_null(strstr(restart, "agent.y.*"));
    assert_null(strstr(live, "run_dir"));
    assert_true(n >= 2);
    /* Options that only moved to another line are unchanged. */
    const char *c1 = tc_file("[agent.echo]\nfail_pct = 5\n");
    const char *c2 = tc_file("\n\n[agent.echo]\n\nfail_pct = 5\n");
    assert_int_equal(config_load(&cfg, c1, NULL, 0, err, sizeof(err)), HSB_OK);
    assert_int_equal(config_load(&cfg2, c2, NULL, 0, err, sizeof(err)), HSB_OK);
    config_diff(&cfg, &cfg2, live, sizeof(live), restart, sizeof(restart));
    assert_null(strstr(live, "options"));
    const char *c3 = tc_file("[agent.echo]\nfail_pct = 6\n");
    assert_int_equal(config_load(&cfg2, c3, NULL, 0, err, sizeof(err)), HSB_OK);
    config_diff(&cfg, &cfg2, live, sizeof(live), restart, sizeof(restart));
    assert_non_null(strstr(live, "agent.echo.options"));
    assert_int_equal(config_load(&cfg2, a, NULL, 0, err, sizeof(err)), HSB_OK);
    assert_int_equal(config_load(&cfg, a, NULL, 0, err, sizeof(err)), HSB_OK);

    /* Identical configs: nothing to report. */
    n = config_diff(&cfg, &cfg, live, sizeof(live), restart, sizeof(restart));
    assert_int_equal(n, 0);
    assert_string_equal(live, "");
    assert_string_equal(restart, "");
}

static void test_print_config_round_trips(void **state)
{
    (void)state;
    assert_int_equal(config_load(&cfg, NULL, NULL, 0, err, sizeof(err)), HSB_OK);
    char path[] = "/tmp/hsbus-print-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    config_print(&cfg, f);
    fclose(f);
    /* The printed example is itself a valid config that loads to the same values. */
    assert_int_equal(config_load(&cfg2, path, NULL, 0, err, sizeof(err)), HSB_OK);
    char live[512], restart[512];
    cfg2.file[0] = '\0';
    assert_int_equal(config_diff(&cfg, &cfg2, live, sizeof(live), restart, sizeof(restart)), 0);
    assert_string_equal(live, "");
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_defaults_without_file, tc_cleanup),
        cmocka_unit_test_teardown(test_file_sets_values_and_agent_inherits_bus, tc_cleanup),
        cmocka_unit_test_teardown(test_unknown_key_names_file_and_line, tc_cleanup),
        cmocka_unit_test_teardown(test_bad_values_are_refused, tc_cleanup),
        cmocka_unit_test_teardown(test_section_without_keys_declares_agent, tc_cleanup),
        cmocka_unit_test_teardown(test_missing_file, tc_cleanup),
        cmocka_unit_test_teardown(test_overrides_win_and_create_agents, tc_cleanup),
        cmocka_unit_test_teardown(test_diff_live_and_restart, tc_cleanup),
        cmocka_unit_test_teardown(test_print_config_round_trips, tc_cleanup),
    };
    return cmocka_run_group_tests_name("daemon_config", tests, NULL, NULL);
}
