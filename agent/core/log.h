/* Logging: human lines on stderr ("2026-11-22T22:05:43.123Z warn moatd: ..."), and JSON
 * lines (access log, deny events) on the access-log stream (stdout unless --access-log). */
#ifndef MOAT_CORE_LOG_H
#define MOAT_CORE_LOG_H

#include <stdint.h>
#include <stdio.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

void log_setup(const char *prog, enum log_level min, FILE *access);
/* Send JSON lines to this stream from now on (NULL: stdout). */
void log_set_access(FILE *access);
enum log_level log_level_parse(const char *s, int *ok);
/* One line on stderr. Identical lines (same level and text) pass at most 10 times per 10 s;
 * the rest are counted and the next copy that passes says how many were dropped. */
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Lines dropped by the rate limit since start (moat_log_lines_suppressed_total). */
uint64_t log_suppressed_total(void);
/* One complete JSON object, written as one line to the access-log stream, or handed to the
 * sink set with log_set_json_sink (moatd's non-blocking writer, obs/access_log.c). */
void log_json_line(const char *json);
/* From now on JSON lines go to fn (NULL: back to the stream, written and flushed at once). */
void log_set_json_sink(void (*fn)(void *arg, const char *line), void *arg);

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
