#include "core/log.h"

#include <stdarg.h>
#include <string.h>

#include "core/util.h"

static struct {
	const char *prog;
	enum log_level min;
	FILE *access;
} logcfg = {"moat", LOG_INFO, NULL};

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
	fprintf(stderr, "%s %s %s: %s\n", iso8601_ms(wall_ms(), ts, sizeof(ts)), names[lvl],
		logcfg.prog, line);
}

void log_json_line(const char *json)
{
	FILE *f = logcfg.access ? logcfg.access : stdout;
	fputs(json, f);
	fputc('\n', f);
	fflush(f);
}
