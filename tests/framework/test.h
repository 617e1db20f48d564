/* A small test framework for moat's C test layers (unit, bpf).
 * TEST(name) { ... } registers a case; CHECK* record failures and continue; SKIP() marks a
 * case skipped with a reason. The runner prints one line per case and closes with
 * "N passed, N failed, N skipped". */
#ifndef MOAT_TEST_H
#define MOAT_TEST_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct test_case {
	const char *name;
	const char *file;
	void (*fn)(void);
	struct test_case *next;
};

void test_register(struct test_case *tc);
void test_fail(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
bool test_failed_now(void);
/* Run every registered case whose name contains one of argv's filters (all when none). */
int test_main(int argc, char **argv);

#define TEST(fname)                                                                   \
	static void fname(void);                                                      \
	static struct test_case fname##_case = {#fname, __FILE__, fname, NULL};       \
	__attribute__((constructor)) static void fname##_register(void)               \
	{                                                                             \
		test_register(&fname##_case);                                         \
	}                                                                             \
	static void fname(void)

#define CHECK(cond)                                                                   \
	do {                                                                          \
		if (!(cond))                                                          \
			test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);            \
	} while (0)

#define CHECK_MSG(cond, ...)                                                          \
	do {                                                                          \
		if (!(cond))                                                          \
			test_fail(__FILE__, __LINE__, __VA_ARGS__);                   \
	} while (0)

#define CHECK_INT(a, b)                                                               \
	do {                                                                          \
		long long _a = (long long)(a), _b = (long long)(b);                   \
		if (_a != _b)                                                         \
			test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a,   \
				  #b, _a, _b);                                        \
	} while (0)

#define CHECK_STR(a, b)                                                               \
	do {                                                                          \
		const char *_a = (a), *_b = (b);                                      \
		if (!_a || !_b || strcmp(_a, _b) != 0)                                \
			test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"",  \
				  #a, #b, _a ? _a : "(null)", _b ? _b : "(null)");    \
	} while (0)

#define CHECK_CONTAINS(hay, needle)                                                   \
	do {                                                                          \
		const char *_h = (hay), *_n = (needle);                               \
		if (!_h || !strstr(_h, _n))                                           \
			test_fail(__FILE__, __LINE__, "%s contains \"%s\": got \"%s\"", \
				  #hay, _n, _h ? _h : "(null)");                       \
	} while (0)

/* Stop the current case (after a failed precondition). */
#define REQUIRE(cond)                                                                 \
	do {                                                                          \
		if (!(cond)) {                                                        \
			test_fail(__FILE__, __LINE__, "REQUIRE(%s)", #cond);          \
			return;                                                       \
		}                                                                     \
	} while (0)

#define SKIP(...)                                                                     \
	do {                                                                          \
		test_skip(__VA_ARGS__);                                               \
		return;                                                               \
	} while (0)

#endif
