#include "ctl/ctl.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CTL_TIMEOUT_MS 30000
#define CTL_BUSY_TRIES 10 /* about 2.7 s of backing off in all */

static bool plain_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       strchr("._~/:@,+=-", c);
}

void ctl_encode(struct sbuf *out, const char *value)
{
	for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
		if (plain_char(*p))
			sbuf_append(out, (const char *)p, 1);
		else
			sbuf_printf(out, "%%%02X", *p);
	}
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool ctl_decode(char *s)
{
	char *w = s;
	for (char *r = s; *r; r++) {
		if (*r != '%') {
			*w++ = *r;
			continue;
		}
		int hi = hexval(r[1]), lo = hi < 0 ? -1 : hexval(r[2]);
		/* %00 would cut the value short without a word: no encoder writes it. */
		if (hi < 0 || lo < 0 || hi * 16 + lo == 0)
			return false;
		*w++ = (char)(hi * 16 + lo);
		r += 2;
	}
	*w = 0;
	return true;
}

int ctl_request_parse(char *line, char **verb, struct ctl_arg *args, int max_args, int *nargs,
		      const char **why)
{
	char *save = NULL;
	*nargs = 0;
	*verb = strtok_r(line, " ", &save);
	if (!*verb) {
		*why = "empty request";
		return -1;
	}
	for (char *tok; (tok = strtok_r(NULL, " ", &save));) {
		char *eq = strchr(tok, '=');
		if (!eq || *nargs == max_args) {
			*why = "malformed request";
			return -1;
		}
		*eq = 0;
		if (!ctl_decode(eq + 1)) {
			*why = "malformed escape in request";
			return -1;
		}
		args[*nargs].key = tok;
		args[*nargs].value = eq + 1;
		(*nargs)++;
	}
	return 0;
}

static int send_request(int fd, const char *line, size_t len, int pass_fd)
{
	struct iovec iov = {.iov_base = (void *)line, .iov_len = len};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	if (pass_fd >= 0) {
		memset(&u, 0, sizeof(u));
		msg.msg_control = u.buf;
		msg.msg_controllen = sizeof(u.buf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
	}
	ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
	if (n < 0)
		return -1;
	/* The rest of a long request goes without the descriptor. */
	for (size_t off = (size_t)n; off < len;) {
		ssize_t m = send(fd, line + off, len - off, MSG_NOSIGNAL);
		if (m < 0 && errno == EINTR)
			continue;
		if (m < 0)
			return -1;
		off += (size_t)m;
	}
	return 0;
}

static int read_all(int fd, struct sbuf *out)
{
	char buf[16384];
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r = poll(&p, 1, CTL_TIMEOUT_MS);
		if (r == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			return 0;
		sbuf_append(out, buf, (size_t)n);
	}
}

static int ctl_call_once(const char *socket_path, const char *verb, const struct ctl_arg *args,
			 int nargs, int pass_fd, int *status, char **body, struct err *e)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(socket_path) >= sizeof(sun.sun_path))
		return err_set(e, "control socket path too long: %s", socket_path);
	strcpy(sun.sun_path, socket_path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return err_set(e, "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		int err = errno;
		close(fd);
		return err_set(e, "connect %s: %s: is moatd running? (--socket or MOAT_SOCKET choose "
				  "another agent)",
			       socket_path, strerror(err));
	}
	struct sbuf req;
	sbuf_init(&req);
	sbuf_puts(&req, verb);
	for (int i = 0; i < nargs; i++) {
		if (!args[i].value)
			continue;
		sbuf_printf(&req, " %s=", args[i].key);
		ctl_encode(&req, args[i].value);
	}
	sbuf_puts(&req, "\n");
	struct sbuf resp;
	sbuf_init(&resp);
	int rc = -1;
	if (send_request(fd, req.s, req.len, pass_fd) < 0) {
		err_set(e, "send to %s: %s", socket_path, strerror(errno));
		goto out;
	}
	shutdown(fd, SHUT_WR);
	if (read_all(fd, &resp) < 0) {
		err_set(e, "read from %s: %s", socket_path, strerror(errno));
		goto out;
	}
	if (!resp.s || strncmp(resp.s, "status ", 7) != 0) {
		err_set(e, "malformed answer from %s", socket_path);
		goto out;
	}
	*status = atoi(resp.s + 7);
	char *nl = strchr(resp.s, '\n');
	*body = xstrdup(nl ? nl + 1 : "");
	rc = 0;
out:
	close(fd);
	sbuf_free(&req);
	sbuf_free(&resp);
	return rc;
}

int ctl_call(const char *socket_path, const char *verb, const struct ctl_arg *args, int nargs,
	     int pass_fd, int *status, char **body, struct err *e)
{
	for (int attempt = 0;; attempt++) {
		if (ctl_call_once(socket_path, verb, args, nargs, pass_fd, status, body, e) < 0)
			return -1;
		bool busy = *status != 0 && strncmp(*body, CTL_BUSY, strlen(CTL_BUSY)) == 0;
		if (!busy || attempt + 1 == CTL_BUSY_TRIES)
			return 0;
		free(*body);
		*body = NULL;
		usleep((useconds_t)(50000 * (attempt + 1))); /* 50 ms, 100 ms, ... */
	}
}
