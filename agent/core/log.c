#include "core/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <string.h>

#include "core/util.h"

/* Identical lines are rate-limited: a loop that fails the same way every turn (accept() at
 * EMFILE under level-triggered epoll) once wrote 1.4 million lines in 5 s. Each line is
 * hashed (level + text); a slot per hash lets LOG_RATE_BURST copies through per
 * LOG_RATE_WINDOW_MS, counts the rest, and says how many it dropped with the next copy that
 * passes. Distinct lines (every config error has its own file:line) are never held back. */
#define LOG_RATE_SLOTS 256
#define LOG_RATE_BURST 10
#define LOG_RATE_WINDOW_MS 10000

struct rate_slot {
	uint64_t hash;
	uint64_t window_start;
	unsigned count;
	uint64_t dropped;     /* in this window, reported with the next line that passes */
};

/* Logging is process-wide by nature (every room logs without a context); this is its
 * whole state. The lock makes log_msg safe from the config-reload worker thread. */
static struct {
	const char *prog;
	enum log_level min;
	FILE *access;
	void (*json_sink)(void *arg, const char *line); /* log_set_json_sink */
	void *json_sink_arg;
	pthread_mutex_t lock;
	struct rate_slot slots[LOG_RATE_SLOTS];
	uint64_t suppressed_total;
} logcfg = {"moat", LOG_INFO, NULL, NULL, NULL, PTHREAD_MUTEX_INITIALIZER, {{0}}, 0};

void log_setup(const char *prog, enum log_level min, FILE *access)
{
	logcfg.prog = prog;
	logcfg.min = min;
	logcfg.access = access;
}

void log_set_access(FILE *access)
{
	logcfg.access = access;
}

enum log_level log_level_parse(const char *s, int *ok)
{
	static const char *names[] = {"debug", "info", "warn", "error"};
	for (int i = 0; i < 4; i++)
		if (strcmp(s, names[i]) == 0) {
			*ok = 1;
			return (enum log_level)i;
		}
	*ok = 0;
	return LOG_INFO;
}

static uint64_t line_hash(enum log_level lvl, const char *s)
{
	uint64_t h = 1469598103934665603ull ^ (uint64_t)lvl; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	return h;
}

/* Under the lock. Returns false when the line is to be dropped; *dropped is set to the
 * number of copies dropped since the last one that passed. */
static bool rate_pass(enum log_level lvl, const char *line, uint64_t *dropped)
{
	uint64_t h = line_hash(lvl, line), now = now_ms();
	struct rate_slot *s = &logcfg.slots[h % LOG_RATE_SLOTS];
	*dropped = 0;
	if (s->hash != h || now - s->window_start >= LOG_RATE_WINDOW_MS) {
		*dropped = s->hash == h ? s->dropped : 0;
		*s = (struct rate_slot){.hash = h, .window_start = now};
	}
	if (++s->count > LOG_RATE_BURST) {
		s->dropped++;
		logcfg.suppressed_total++;
		return false;
	}
	return true;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	static const char *names[] = {"debug", "info", "warn", "error"};
	if (lvl < logcfg.min)
		return;
	char ts[40], line[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	uint64_t dropped;
	pthread_mutex_lock(&logcfg.lock);
	if (rate_pass(lvl, line, &dropped)) {
		const char *note = "";
		char more[96] = "";
		if (dropped)
			snprintf(more, sizeof(more), " (%llu identical lines suppressed before this)",
				 (unsigned long long)dropped);
		unsigned count = logcfg.slots[line_hash(lvl, line) % LOG_RATE_SLOTS].count;
		if (count == LOG_RATE_BURST)
			note = " (repeated: more identical lines within 10 s are counted, not written)";
		fprintf(stderr, "%s %s %s: %s%s%s\n", iso8601_ms(wall_ms(), ts, sizeof(ts)),
			names[lvl], logcfg.prog, line, more, note);
	}
	pthread_mutex_unlock(&logcfg.lock);
}

uint64_t log_suppressed_total(void)
{
	pthread_mutex_lock(&logcfg.lock);
	uint64_t n = logcfg.suppressed_total;
	pthread_mutex_unlock(&logcfg.lock);
	return n;
}

void log_set_json_sink(void (*fn)(void *arg, const char *line), void *arg)
{
	pthread_mutex_lock(&logcfg.lock);
	logcfg.json_sink = fn;
	logcfg.json_sink_arg = arg;
	pthread_mutex_unlock(&logcfg.lock);
}

void log_json_line(const char *json)
{
	pthread_mutex_lock(&logcfg.lock);
	void (*sink)(void *, const char *) = logcfg.json_sink;
	void *arg = logcfg.json_sink_arg;
	pthread_mutex_unlock(&logcfg.lock);
	if (sink) { /* called unlocked: the sink may log (its drop warnings) */
		sink(arg, json);
		return;
	}
	FILE *f = logcfg.access ? logcfg.access : stdout;
	fputs(json, f);
	fputc('\n', f);
	fflush(f);
}
