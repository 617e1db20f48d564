/* Deny reasons have one mapping (core/reasons.c): every reason the BPF side or the agent
 * gives has its own code for the access log and the metrics, and its own sentence; and the
 * socket options moat relies on report a failure with the option's name. */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/reasons.h"
#include "core/util.h"
#include "test.h"

TEST(every_deny_reason_has_its_own_code_and_sentence)
{
	static const uint32_t all[] = {
		MOAT_REASON_POLICY_DENY,  MOAT_REASON_NO_ALLOW,     MOAT_REASON_UNREGISTERED,
		MOAT_REASON_STRICT_PLAIN, MOAT_REASON_UNKNOWN_ADDR, MOAT_REASON_SPOOFED,
		MOAT_REASON_NO_LISTENER,  MOAT_REASON_AGENT_PORT,   MOAT_REASON_DESTINATION_DENIED,
		MOAT_REASON_LATE_REJECTION,
	};
	for (size_t i = 0; i < ARRAY_SIZE(all); i++) {
		CHECK_MSG(strcmp(moat_reason_code(all[i]), "DENY") != 0, "reason %u has no code",
			  all[i]);
		CHECK_MSG(strcmp(moat_reason_text(all[i]), "none") != 0, "reason %u has no text",
			  all[i]);
		for (size_t j = 0; j < i; j++)
			CHECK_MSG(strcmp(moat_reason_code(all[i]), moat_reason_code(all[j])) != 0,
				  "reasons %u and %u share the code %s", all[i], all[j],
				  moat_reason_code(all[i]));
	}
	/* the codes the access log documents (docs/observability.md) */
	CHECK_STR(moat_reason_code(MOAT_REASON_POLICY_DENY), "POLICY_DENY");
	CHECK_STR(moat_reason_code(MOAT_REASON_STRICT_PLAIN), "STRICT_PLAINTEXT");
	CHECK_STR(moat_reason_code(MOAT_REASON_UNKNOWN_ADDR), "UNKNOWN_ADDRESS");
	CHECK_STR(moat_reason_code(MOAT_REASON_SPOOFED), "SPOOFED_SOURCE");
	CHECK_STR(moat_reason_code(MOAT_REASON_NO_LISTENER), "NO_PLAINTEXT_LISTENER");
	CHECK_STR(moat_reason_code(MOAT_REASON_LATE_REJECTION), "LATE_REJECTION");
	CHECK_STR(moat_reason_code(12345), "DENY");
	CHECK_STR(moat_reason_text(MOAT_REASON_NONE), "none");
}

TEST(socket_option_failure_names_the_option)
{
	int p[2];
	REQUIRE(pipe(p) == 0);
	struct err e = {{0}};
	CHECK_INT(sock_set_int(p[1], SOL_SOCKET, SO_MARK, 0x539, "SO_MARK", &e), -1);
	CHECK_CONTAINS(e.msg, "setsockopt(SO_MARK): ENOTSOCK");
	close(p[0]);
	close(p[1]);
	int s = socket(AF_INET6, SOCK_STREAM, 0);
	REQUIRE(s >= 0);
	CHECK_INT(sock_set_int(s, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR", &e), 0);
	close(s);
}
