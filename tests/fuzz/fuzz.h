/* Shared bits of the libFuzzer targets (tests/fuzz/fuzz_*.c, built by `make fuzz-build`). */
#ifndef MOAT_FUZZ_H
#define MOAT_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A property of the code under test does not hold: report it as a crash, so libFuzzer saves
 * the input (a property violation is as much a finding as a memory error). */
#define FUZZ_ASSERT(cond, ...)                                                              \
	do {                                                                                \
		if (!(cond)) {                                                              \
			fprintf(stderr, "%s:%d: property failed: %s: ", __FILE__, __LINE__, \
				#cond);                                                     \
			fprintf(stderr, __VA_ARGS__);                                       \
			fputc('\n', stderr);                                                \
			abort();                                                            \
		}                                                                           \
	} while (0)

/* The input as a NUL-terminated string (embedded NULs end it early, as they would in C). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		abort();
	memcpy(s, data, size);
	s[size] = 0;
	return s;
}

/* Split the next field off *data at sep (the separator is consumed); the field is a fresh
 * NUL-terminated string. When no separator is left the rest of the input is the field. */
static inline char *fuzz_field(const uint8_t **data, size_t *size, uint8_t sep)
{
	const uint8_t *end = memchr(*data, sep, *size);
	size_t n = end ? (size_t)(end - *data) : *size;
	char *s = fuzz_cstr(*data, n);
	*data += end ? n + 1 : n;
	*size -= end ? n + 1 : n;
	return s;
}

#endif
