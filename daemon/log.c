/*
 * daemon/log.c - key=value event lines on stderr.
 *
 * Each line is formatted into a stack buffer and written with a single write(2): POSIX makes
 * writes of up to PIPE_BUF bytes to a pipe atomic, and journald and most collectors read stderr
 * through a pipe, so lines from the loop, nng, agent and store threads never interleave.
 */
#include "daemon/log.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = HSB_LOG_INFO;
static atomic_ulong log_counts[HSB_LOG_ERROR + 1];

static const char *const log_names[] = {"debug", "info", "warn", "error"};

void log_set_level(hsb_log_level level)
{
    atomic_store(&log_level, (int)level);
}

hsb_log_level log_get_level(void)
{
    return (hsb_log_level)atomic_load(&log_level);
}

int log_level_parse(const char *s)
{
    for (int i = 0; i <= HSB_LOG_ERROR; i++) {
        if (strcmp(s, log_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

const char *log_level_name(hsb_log_level level)
{
    return (level >= HSB_LOG_DEBUG && level <= HSB_LOG_ERROR) ? log_names[level] : "?";
}

unsigned long log_count(hsb_log_level level)
{
    return atomic_load(&log_counts[level]);
}

void log_vwrite(hsb_log_level level, const char *prefix, const char *event, const char *fmt,
                va_list ap)
{
    if ((int)level < atomic_load(&log_level)) {
        return;
    }
    atomic_fetch_add(&log_counts[level], 1);

    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n =
        snprintf(line, sizeof(line), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s %sevent=%s",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 ts.tv_nsec / 1000000, log_names[level], prefix ? prefix : "", event);
    if (n < 0) {
        return;
    }
    size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
    if (fmt != NULL && fmt[0] != '\0' && len < sizeof(line) - 2) {
        line[len++] = ' ';
        int m = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
        if (m > 0) {
            len += (size_t)m < sizeof(line) - len ? (size_t)m : sizeof(line) - len - 1;
        }
    }
    if (len > sizeof(line) - 2) {
        len = sizeof(line) - 2;
    }
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w; /* Nowhere to report a failed log write. */
}

void log_write(hsb_log_level level, const char *event, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, NULL, event, fmt, ap);
    va_end(ap);
}
