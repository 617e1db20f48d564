#include "core/reasons.h"

#include <stddef.h>

static const struct {
	uint32_t reason;
	const char *code, *text;
} reasons[] = {
	{MOAT_REASON_POLICY_DENY, "POLICY_DENY", "a DENY policy matched"},
	{MOAT_REASON_NO_ALLOW, "NO_ALLOW", "ALLOW policies apply, none matched"},
	{MOAT_REASON_UNREGISTERED, "UNREGISTERED", "destination not registered (REGISTRY_ONLY)"},
	{MOAT_REASON_STRICT_PLAIN, "STRICT_PLAINTEXT", "plaintext to a STRICT workload"},
	{MOAT_REASON_ALLOWED, "ALLOWED", "allowed"},
	{MOAT_REASON_UNKNOWN_ADDR, "UNKNOWN_ADDRESS",
	 "new TCP connection to a pod address moat did not register"},
	{MOAT_REASON_SPOOFED, "SPOOFED_SOURCE", "a pod sent from an address that is not its own"},
	{MOAT_REASON_NO_LISTENER, "NO_PLAINTEXT_LISTENER",
	 "PERMISSIVE plaintext while no 15006 listener (moatd down)"},
	{MOAT_REASON_NO_ENDPOINT, "NO_ENDPOINT", "a service VIP: no endpoint allows this source"},
	{MOAT_REASON_AGENT_PORT, "AGENT_PORT",
	 "agent ports 15001/15006/15008 are not valid destinations"},
	{MOAT_REASON_DESTINATION_DENIED, "DESTINATION_DENIED",
	 "the destination's agent denied it (HBONE 401)"},
	{MOAT_REASON_LATE_REJECTION, "LATE_REJECTION", "late rejection after a policy change"},
};

static int find(uint32_t reason)
{
	for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
		if (reasons[i].reason == reason)
			return (int)i;
	return -1;
}

const char *moat_reason_code(uint32_t reason)
{
	int i = find(reason);
	return i < 0 ? "DENY" : reasons[i].code;
}

const char *moat_reason_text(uint32_t reason)
{
	int i = find(reason);
	return i < 0 ? "none" : reasons[i].text;
}
