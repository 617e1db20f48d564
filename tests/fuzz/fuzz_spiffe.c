/* Fuzz target: SPIFFE ID parsing (agent/identity/spiffe.c: spiffe_id_check, spiffe_principal).
 * Properties: an accepted ID is exactly "spiffe://" td "/ns/" ns "/sa/" sa of the parts it
 * returns (strict parsing leaves nothing out); too-small output buffers are refused, never
 * overrun; every refusal says why. */
#include "fuzz.h"

#include "identity/identity.h"
#include "identity/identity_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *id = fuzz_cstr(data, size);
	static char td[SPIFFE_URI_MAX + 1], ns[SPIFFE_URI_MAX + 1], sa[SPIFFE_URI_MAX + 1];
	struct err e = {0};
	if (spiffe_id_check(id, td, sizeof(td), ns, sizeof(ns), sa, sizeof(sa), &e) == 0) {
		static char back[3 * SPIFFE_URI_MAX + 32];
		snprintf(back, sizeof(back), "spiffe://%s/ns/%s/sa/%s", td, ns, sa);
		FUZZ_ASSERT(strcmp(back, id) == 0, "\"%s\" parsed as \"%s\"", id, back);
		FUZZ_ASSERT(spiffe_id_parse(id, NULL, 0, NULL, 0, NULL, 0), "parse disagrees");
		const char *p = spiffe_principal(id);
		FUZZ_ASSERT(p == id + 9, "principal of \"%s\"", id);
		/* Buffers one byte too small must be refused. */
		size_t tl = strlen(td), nl = strlen(ns), sl = strlen(sa);
		static char small[SPIFFE_URI_MAX + 1];
		FUZZ_ASSERT(spiffe_id_check(id, small, tl, NULL, 0, NULL, 0, &e) < 0,
			    "trust domain fitted %zu bytes", tl);
		FUZZ_ASSERT(spiffe_id_check(id, NULL, 0, small, nl, NULL, 0, &e) < 0,
			    "namespace fitted %zu bytes", nl);
		FUZZ_ASSERT(spiffe_id_check(id, NULL, 0, NULL, 0, small, sl, &e) < 0,
			    "service account fitted %zu bytes", sl);
	} else {
		FUZZ_ASSERT(e.msg[0], "refused \"%s\" without a reason", id);
		FUZZ_ASSERT(!spiffe_id_parse(id, NULL, 0, NULL, 0, NULL, 0), "parse disagrees");
	}
	struct err te = {0};
	if (trust_domain_check(id, &te) < 0)
		FUZZ_ASSERT(te.msg[0], "trust domain refused without a reason");
	free(id);
	return 0;
}
