/* Fuzz target: the control-socket request line (agent/ctl: ctl_request_parse, ctl_decode),
 * as moatd's server reads it: bytes up to the first newline, NUL-terminated.
 * Properties: every argument has a key and a value; encoding a decoded value and decoding
 * it again gives the same value (the client and the server agree on every string). */
#include "fuzz.h"

#include "ctl/ctl.h"

#define MAX_ARGS 64 /* as agent/ctl/server.c */

static void check_roundtrip(const char *value)
{
	struct sbuf enc;
	sbuf_init(&enc);
	ctl_encode(&enc, value);
	FUZZ_ASSERT(!enc.len || (!memchr(enc.s, ' ', enc.len) && !memchr(enc.s, '\n', enc.len)),
		    "encoded value \"%s\" has a separator", enc.s);
	char *dec = sbuf_take(&enc);
	FUZZ_ASSERT(ctl_decode(dec), "own encoding \"%s\" does not decode", dec);
	FUZZ_ASSERT(strcmp(dec, value) == 0, "\"%s\" decodes to \"%s\"", value, dec);
	free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *line = fuzz_cstr(data, size);
	char *nl = strchr(line, '\n');
	if (nl)
		*nl = 0;
	char *verb = NULL;
	struct ctl_arg args[MAX_ARGS];
	int nargs = -1;
	const char *why = NULL;
	if (ctl_request_parse(line, &verb, args, MAX_ARGS, &nargs, &why) == 0) {
		FUZZ_ASSERT(verb && *verb && !strchr(verb, ' '), "bad verb");
		FUZZ_ASSERT(nargs >= 0 && nargs <= MAX_ARGS, "nargs %d", nargs);
		for (int i = 0; i < nargs; i++) {
			FUZZ_ASSERT(args[i].key && args[i].value, "argument %d incomplete", i);
			FUZZ_ASSERT(!strchr(args[i].key, ' '), "key with a space");
			check_roundtrip(args[i].value);
		}
	} else {
		FUZZ_ASSERT(why && *why, "refusal without a reason");
	}
	free(line);
	return 0;
}
