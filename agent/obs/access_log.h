/* The access-log writer: JSON lines (connection records, deny events) leave the loop thread
 * through a bounded in-memory ring and a writer thread that owns every write() to the sink.
 * The loop thread never blocks on the sink and never flushes per line: appending is a copy
 * under a mutex. A sink that cannot keep up (a pipe nobody reads, a stalled disk) fills the
 * ring; lines that do not fit are dropped whole, counted (moat_access_log_dropped_total) and
 * reported by one warning per ACCESS_LOG_DROP_LOG_MS. On a clean stop the writer drains the
 * ring for at most a bounded time (docs/observability.md "Access log", why a thread). */
#ifndef MOAT_OBS_ACCESS_LOG_H
#define MOAT_OBS_ACCESS_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

#define ACCESS_LOG_RING_DEFAULT (4u << 20) /* --access-log-buffer default: ~15,000 lines */
#define ACCESS_LOG_RING_MIN 4096
#define ACCESS_LOG_DRAIN_MS 2000           /* at most this long to drain on a clean stop */
#define ACCESS_LOG_DROP_LOG_MS 10000       /* one warning about drops per this long */

struct access_log;

/* Write to fd (not closed by the writer; the caller keeps it open until access_log_close
 * returned) through a ring of ring_bytes. name says what the sink is, for messages. */
struct access_log *access_log_open(int fd, size_t ring_bytes, const char *name, struct err *e);
/* Queue one line (a newline is added). Never blocks on the sink. */
void access_log_line(struct access_log *al, const char *line);
/* log_set_json_sink's adapter: access_log_line(arg, line). */
void access_log_sink(void *arg, const char *line);
/* Lines dropped so far because the ring was full (or left unwritten at close). */
uint64_t access_log_dropped(const struct access_log *al);
/* Lines written to the sink so far. */
uint64_t access_log_written(const struct access_log *al);
/* Nothing queued: give the ring's pages back to the kernel (after a burst, when moatd is
 * idle again; the next line faults a page back in). */
void access_log_trim(struct access_log *al);
/* Drain what is queued for at most drain_ms, then stop the writer and free everything. A
 * writer still blocked after that is left behind (the process is ending); what it did not
 * write is counted as dropped and logged. Returns the lines left unwritten. NULL: 0. */
uint64_t access_log_close(struct access_log *al, int drain_ms);

#endif
