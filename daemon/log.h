/*
 * daemon/log.h - one line per event, key=value, to stderr.
 *
 *   ts=2026-11-22T10:15:03.123Z level=info event=agent_attached agent=echo session=3
 *
 * Log lines never carry a message body or a patient identifier: callers pass names, ids, counts
 * and error codes only. Values that could contain spaces or quotes are quoted by log_kv_str.
 *
 * Threads: every function may be called from any thread. A line is written with one write(2), so
 * lines from different threads never interleave. log_write blocks only as long as write(2) on
 * stderr does.
 */
#ifndef HSB_DAEMON_LOG_H
#define HSB_DAEMON_LOG_H

#include <stdarg.h>
#include <stddef.h>

#include "agents/agent.h" /* hsb_log_level */

/* log_set_level sets the lowest level written (default HSB_LOG_INFO). Any thread; atomic. */
void log_set_level(hsb_log_level level);
hsb_log_level log_get_level(void);

/* log_level_parse maps "debug", "info", "warn", "error" to a level. Returns -1 if unknown. */
int log_level_parse(const char *s);
const char *log_level_name(hsb_log_level level);

/*
 * log_write writes one line: ts, level and event, then the caller's key=value text formatted from
 * fmt (may be NULL for none). Lines longer than 1 KiB are truncated.
 */
void log_write(hsb_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void log_vwrite(hsb_log_level level, const char *prefix, const char *event, const char *fmt,
                va_list ap) __attribute__((format(printf, 4, 0)));

/* log_count returns how many lines have been written at each level (for /metrics). */
unsigned long log_count(hsb_log_level level);

#define log_debug(ev, ...) log_write(HSB_LOG_DEBUG, ev, __VA_ARGS__)
#define log_info(ev, ...)  log_write(HSB_LOG_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...)  log_write(HSB_LOG_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) log_write(HSB_LOG_ERROR, ev, __VA_ARGS__)

#endif /* HSB_DAEMON_LOG_H */
