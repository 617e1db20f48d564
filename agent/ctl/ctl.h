/* The control protocol between moatctl and moatd, over a Unix stream socket
 * (<state-dir>/moatd.sock, mode 0600).
 *
 * Request: one line "VERB key=value key=value ...\n" where values are percent-encoded
 * (%XX for bytes outside [A-Za-z0-9._~/:@,+=-]); optionally one file descriptor passed with
 * SCM_RIGHTS on the same sendmsg (enroll passes the pod's netns).
 * Response: a first line "status N\n" (N = the exit code moatctl should return: 0 ok,
 * 1 no/DENY, 2 error), then a body (text or JSON) until the server closes. */
#ifndef MOAT_CTL_H
#define MOAT_CTL_H

#include "core/util.h"

struct ctl_arg {
	const char *key, *value;
};

/* The answer's first body words when moatd dropped a request unread to make room for newer
 * clients: the request had no effect, so ctl_call sends it again (bounded). */
#define CTL_BUSY "control socket busy"

/* Client side: send verb + args (+ fd when >= 0), read the whole response.
 * Returns 0 with *status and *body (malloc'd) set, or -1 when the agent cannot be reached
 * (e explains: "connect /run/moat/moatd.sock: No such file or directory: is moatd running?"). */
int ctl_call(const char *socket_path, const char *verb, const struct ctl_arg *args, int nargs,
	     int pass_fd, int *status, char **body, struct err *e);

/* Encoding helpers shared by both sides. */
void ctl_encode(struct sbuf *out, const char *value);
/* Decode in place; returns false on a malformed escape (or %00, which would cut it short). */
bool ctl_decode(char *s);

/* Server side: split one request line (without its newline) in place into the verb and up
 * to max_args key=value pairs, values decoded. Returns 0, or -1 with *why set ("empty
 * request", "malformed request", "malformed escape in request"). Kept apart from the socket
 * so the parser can be fuzzed on a buffer (tests/fuzz/fuzz_ctl.c). */
int ctl_request_parse(char *line, char **verb, struct ctl_arg *args, int max_args, int *nargs,
		      const char **why);

#endif
