/* Why a connection was refused, defined once: each reason's code (the access log's
 * "reason_code" and the metrics' "reason" label) and its sentence (moatctl explain,
 * /config_dump-like views). The BPF side reports the reasons of include/moat/abi.h; the agent
 * adds its own above them. */
#ifndef MOAT_CORE_REASONS_H
#define MOAT_CORE_REASONS_H

#include <stdint.h>

#include "moat/abi.h"

/* Reasons only the agent gives (never in a BPF map or event). */
#define MOAT_REASON_AGENT_PORT 64         /* a connect to 15001/15006/15008 */
#define MOAT_REASON_DESTINATION_DENIED 65 /* the destination's agent answered HBONE 401 */
#define MOAT_REASON_LATE_REJECTION 66     /* a policy change denied an open connection */

/* "POLICY_DENY", "NO_ALLOW", ...; "DENY" for a reason without a code of its own. */
const char *moat_reason_code(uint32_t reason);
/* "a DENY policy matched", ...; "none" for MOAT_REASON_NONE and unknown ones. */
const char *moat_reason_text(uint32_t reason);

#endif
