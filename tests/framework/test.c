#include "test.h"

#include <stdarg.h>
#include <signal.h>
#include <stdlib.h>

static struct test_case *cases, **cases_tail = &cases;
static int case_failures;
static bool case_skipped;
static char skip_reason[512];

void test_register(struct test_case *tc)
{
	*cases_tail = tc;
	cases_tail = &tc->next;
}

void test_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	fprintf(stdout, "    %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	case_failures++;
}

void test_skip(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(skip_reason, sizeof(skip_reason), fmt, ap);
	va_end(ap);
	case_skipped = true;
}

bool test_failed_now(void)
{
	return case_failures > 0;
}

static bool selected(const struct test_case *tc, int argc, char **argv)
{
	if (argc <= 1)
		return true;
	for (int i = 1; i < argc; i++)
		if (strstr(tc->name, argv[i]) || strstr(tc->file, argv[i]))
			return true;
	return false;
}

int test_main(int argc, char **argv)
{
	int passed = 0, failed = 0, skipped = 0;
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN); /* as moatd: a closed peer is an error code, not a kill */
	for (struct test_case *tc = cases; tc; tc = tc->next) {
		if (!selected(tc, argc, argv))
			continue;
		case_failures = 0;
		case_skipped = false;
		tc->fn();
		if (case_failures) {
			printf("FAIL %s (%s)\n", tc->name, tc->file);
			failed++;
		} else if (case_skipped) {
			printf("skip %s: %s\n", tc->name, skip_reason);
			skipped++;
		} else {
			printf("ok   %s\n", tc->name);
			passed++;
		}
	}
	printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
	return failed ? 1 : 0;
}
