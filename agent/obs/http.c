/* A small HTTP/1.1 server for the agent's node ports (metrics, admin, readiness).
 *
 * One request per connection: read the head (request line + headers) until an empty line,
 * call the handler synchronously, write the response with Connection: close, then half-close
 * and discard whatever the client still sends until it closes (a lingering close: closing
 * with unread input would make the kernel send RST and the client could lose the
 * response). Every connection has one timer: the request must arrive within the timeout,
 * the response must make write progress within it, the linger is short. */
#include "obs/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/accept.h"
#include "core/log.h"
#include "core/loop.h"

#define HTTP_MAX_HEAD (8 * 1024)    /* request line + headers */
#define HTTP_FIRST_BUF 512          /* grows by doubling up to HTTP_MAX_HEAD */
#define HTTP_DEFAULT_TIMEOUT_MS 10000
#define HTTP_LINGER_MS 1000         /* after the response: wait for the client's FIN */
#define HTTP_LINGER_MAX (64 * 1024) /* discard at most this much before closing */
#define HTTP_MAX_CONNS 256          /* accepting pauses above this */
#define HTTP_ACCEPT_BATCH 64        /* accepts per wake-up, for fairness */

enum conn_state { CONN_READ, CONN_WRITE, CONN_LINGER };

struct http_conn {
	struct http_server *srv;
	struct http_conn *prev, *next;
	int fd;
	struct loop_io io;
	struct loop_timer timer;
	enum conn_state state;
	char *in;          /* request head, NUL-terminated */
	size_t in_len, in_cap;
	char *out;         /* whole response */
	size_t out_len, out_off;
	size_t discarded;  /* bytes read while lingering */
};

struct http_server {
	struct loop *loop;
	int fd;
	struct acceptor acc; /* the accept loop and its back-off (core/accept.c) */
	http_handler handler;
	void *arg;
	char name[ADDR_STRLEN + 8]; /* "127.0.0.1:15000" for messages */
	uint16_t port;
	uint32_t timeout_ms;
	struct http_conn *conns;
	size_t n_conns;
	bool full;        /* HTTP_MAX_CONNS reached: accepting held */
};

struct request {
	char *method, *path, *query;
};

/* ---- connection lifetime ---- */

static void conn_close(struct http_conn *c)
{
	struct http_server *s = c->srv;
	loop_io_del(s->loop, &c->io);
	loop_timer_cancel(s->loop, &c->timer);
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->n_conns--;
	free(c->in);
	free(c->out);
	free(c);
	if (s->full && s->n_conns < HTTP_MAX_CONNS) {
		s->full = false;
		acceptor_hold(&s->acc, false);
	}
}

static void conn_on_timer(struct loop_timer *t)
{
	conn_close(container_of(t, struct http_conn, timer));
}

/* ---- response ---- */

static const char *reason_phrase(int status)
{
	static const struct {
		int status;
		const char *text;
	} reasons[] = {
		{200, "OK"}, {201, "Created"}, {202, "Accepted"}, {204, "No Content"},
		{301, "Moved Permanently"}, {302, "Found"}, {304, "Not Modified"},
		{400, "Bad Request"}, {401, "Unauthorized"}, {403, "Forbidden"},
		{404, "Not Found"}, {405, "Method Not Allowed"}, {408, "Request Timeout"},
		{409, "Conflict"}, {413, "Content Too Large"}, {429, "Too Many Requests"},
		{431, "Request Header Fields Too Large"}, {500, "Internal Server Error"},
		{501, "Not Implemented"}, {502, "Bad Gateway"}, {503, "Service Unavailable"},
		{504, "Gateway Timeout"}, {505, "HTTP Version Not Supported"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(reasons); i++)
		if (reasons[i].status == status)
			return reasons[i].text;
	static const char *by_class[] = {"Unknown", "Informational", "Success", "Redirection",
					 "Client Error", "Server Error"};
	return by_class[status / 100 <= 5 ? status / 100 : 0];
}

static bool has_crlf(const char *s)
{
	return strpbrk(s, "\r\n") != NULL;
}

/* Head + (unless HEAD) body into c->out. */
static void build_response(struct http_conn *c, bool head_only, struct http_response *r)
{
	int status = r->status ? r->status : 200;
	if (status < 200 || status > 599) {
		log_warn("http %s: handler returned status %d; sending 500", c->srv->name, status);
		status = 500;
		sbuf_free(&r->body);
	}
	const char *ctype = r->content_type && *r->content_type && !has_crlf(r->content_type)
				    ? r->content_type
				    : "text/plain; charset=utf-8";
	bool no_body = status == 204 || status == 304;
	struct sbuf out;
	sbuf_init(&out);
	sbuf_printf(&out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n", status, reason_phrase(status),
		    ctype);
	if (!no_body)
		sbuf_printf(&out, "Content-Length: %zu\r\n", r->body.len);
	if (status == 405)
		sbuf_puts(&out, "Allow: GET, HEAD\r\n");
	sbuf_puts(&out, "Connection: close\r\n\r\n");
	if (!head_only && !no_body && r->body.len)
		sbuf_append(&out, r->body.s, r->body.len);
	c->out_len = out.len;
	c->out_off = 0;
	c->out = sbuf_take(&out);
}

static void conn_write(struct http_conn *c);

static void conn_respond(struct http_conn *c, bool head_only, struct http_response *r)
{
	build_response(c, head_only, r);
	sbuf_free(&r->body);
	free(c->in); /* the head is no longer needed */
	c->in = NULL;
	c->in_len = c->in_cap = 0;
	c->state = CONN_WRITE;
	loop_timer_arm(c->srv->loop, &c->timer, c->srv->timeout_ms);
	conn_write(c);
}

static void conn_error(struct http_conn *c, int status)
{
	struct http_response r = {.status = status};
	sbuf_init(&r.body);
	sbuf_printf(&r.body, "%d %s\n", status, reason_phrase(status));
	conn_respond(c, false, &r);
}

/* ---- request parsing ---- */

static bool is_tchar(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool token_ok(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_tchar((unsigned char)s[i]))
			return false;
	return true;
}

/* Next line of the head, without its CR LF / LF; NUL-terminates it in place. */
static char *next_line(char **cursor)
{
	char *line = *cursor, *nl = strchr(line, '\n');
	if (!nl)
		return NULL;
	*nl = 0;
	if (nl > line && nl[-1] == '\r')
		nl[-1] = 0;
	*cursor = nl + 1;
	return line;
}

static bool header_line_ok(const char *line)
{
	const char *colon = strchr(line, ':');
	if (!colon || !token_ok(line, (size_t)(colon - line)))
		return false; /* also rejects obs-fold (leading whitespace) */
	for (const unsigned char *p = (const unsigned char *)colon + 1; *p; p++)
		if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
			return false;
	return true;
}

/* origin-form "/p?q", absolute-form "http://host/p?q" (path "/" when absent). */
static bool split_target(char *target, struct request *rq)
{
	for (const unsigned char *p = (const unsigned char *)target; *p; p++)
		if (*p <= 0x20 || *p == 0x7f)
			return false;
	if (strncasecmp(target, "http://", 7) == 0 || strncasecmp(target, "https://", 8) == 0) {
		char *slash = strchr(strstr(target, "//") + 2, '/');
		char *qmark = strchr(strstr(target, "//") + 2, '?');
		if (!slash || (qmark && qmark < slash)) {
			/* no path: "/" plus the query, if any */
			rq->path = "/";
			rq->query = qmark ? qmark + 1 : "";
			return true;
		}
		target = slash;
	}
	if (target[0] != '/')
		return false;
	char *hash = strchr(target, '#');
	if (hash)
		*hash = 0;
	char *q = strchr(target, '?');
	if (q)
		*q++ = 0;
	rq->path = target;
	rq->query = q ? q : "";
	return true;
}

/* Returns 0 when rq is filled, else the HTTP status to answer with. */
static int parse_head(char *head, struct request *rq)
{
	char *cursor = head;
	char *line = next_line(&cursor);
	if (!line)
		return 400;
	char *sp1 = strchr(line, ' ');
	char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	if (!sp1 || !sp2 || strchr(sp2 + 1, ' '))
		return 400;
	*sp1 = *sp2 = 0;
	const char *version = sp2 + 1;
	if (!token_ok(line, (size_t)(sp1 - line)))
		return 400;
	if (strncmp(version, "HTTP/", 5) != 0 || strlen(version) != 8 || version[6] != '.' ||
	    version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9')
		return 400;
	for (char *h; (h = next_line(&cursor)) && *h;)
		if (!header_line_ok(h))
			return 400;
	if (version[5] != '1')
		return 505; /* e.g. an HTTP/2 preface "PRI * HTTP/2.0" */
	rq->method = line;
	bool get_or_head = strcmp(line, "GET") == 0 || strcmp(line, "HEAD") == 0;
	if (!split_target(sp1 + 1, rq))
		return get_or_head || strcmp(sp1 + 1, "*") != 0 ? 400 : 405;
	if (!get_or_head)
		return 405;
	return 0;
}

/* Length of the head including its terminating empty line, or 0 if not complete yet. */
static size_t head_end(const char *buf, size_t len, size_t from)
{
	for (size_t i = from; i < len; i++) {
		if (buf[i] != '\n')
			continue;
		if (i >= 1 && buf[i - 1] == '\n')
			return i + 1;
		if (i >= 2 && buf[i - 1] == '\r' && buf[i - 2] == '\n')
			return i + 1;
	}
	return 0;
}

static void conn_handle(struct http_conn *c, size_t head_len)
{
	c->in[head_len] = 0;
	if (memchr(c->in, 0, head_len)) {
		conn_error(c, 400);
		return;
	}
	struct request rq;
	int status = parse_head(c->in, &rq);
	if (status) {
		conn_error(c, status);
		return;
	}
	struct http_response r = {.status = 200};
	sbuf_init(&r.body);
	c->srv->handler(c->srv->arg, rq.method, rq.path, rq.query, &r);
	conn_respond(c, strcmp(rq.method, "HEAD") == 0, &r);
}

/* ---- I/O ---- */

static void conn_read(struct http_conn *c)
{
	for (;;) {
		if (c->in_len == c->in_cap) {
			if (c->in_cap >= HTTP_MAX_HEAD) {
				conn_error(c, 431);
				return;
			}
			c->in_cap = c->in_cap ? c->in_cap * 2 : HTTP_FIRST_BUF;
			if (c->in_cap > HTTP_MAX_HEAD)
				c->in_cap = HTTP_MAX_HEAD;
			c->in = xrealloc(c->in, c->in_cap + 1);
		}
		ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
		if (n > 0) {
			size_t from = c->in_len >= 3 ? c->in_len - 3 : 0;
			c->in_len += (size_t)n;
			size_t end = head_end(c->in, c->in_len, from);
			if (end) {
				conn_handle(c, end);
				return;
			}
		} else if (n == 0) {
			/* The client gave up (or half-closed) before the head was complete. */
			if (c->in_len == 0)
				conn_close(c);
			else
				conn_error(c, 400);
			return;
		} else if (errno == EINTR) {
			continue;
		} else {
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				conn_close(c);
			return;
		}
	}
}

static void conn_start_linger(struct http_conn *c)
{
	free(c->out);
	c->out = NULL;
	shutdown(c->fd, SHUT_WR);
	c->state = CONN_LINGER;
	if (loop_io_mod(c->srv->loop, &c->io, EPOLLIN) < 0) {
		conn_close(c);
		return;
	}
	uint32_t linger = c->srv->timeout_ms < HTTP_LINGER_MS ? c->srv->timeout_ms : HTTP_LINGER_MS;
	loop_timer_arm(c->srv->loop, &c->timer, linger);
}

static void conn_write(struct http_conn *c)
{
	bool progress = false;
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (n > 0) {
			c->out_off += (size_t)n;
			progress = true;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (loop_io_mod(c->srv->loop, &c->io, EPOLLOUT) < 0) {
				conn_close(c);
				return;
			}
			if (progress)
				loop_timer_arm(c->srv->loop, &c->timer, c->srv->timeout_ms);
			return;
		} else {
			conn_close(c); /* the client went away */
			return;
		}
	}
	conn_start_linger(c);
}

static void conn_linger(struct http_conn *c)
{
	char scratch[4096];
	for (;;) {
		ssize_t n = recv(c->fd, scratch, sizeof(scratch), 0);
		if (n > 0) {
			c->discarded += (size_t)n;
			if (c->discarded > HTTP_LINGER_MAX)
				break;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			return;
		} else {
			break; /* EOF or error */
		}
	}
	conn_close(c);
}

static void conn_on_io(struct loop_io *io, uint32_t events)
{
	struct http_conn *c = container_of(io, struct http_conn, io);
	(void)events; /* errors and hang-ups surface through recv/send */
	switch (c->state) {
	case CONN_READ: conn_read(c); break;
	case CONN_WRITE: conn_write(c); break;
	case CONN_LINGER: conn_linger(c); break;
	}
}

/* ---- listener ---- */

static void conn_new(struct http_server *s, int fd)
{
	struct http_conn *c = xcalloc(1, sizeof(*c));
	c->srv = s;
	c->fd = fd;
	c->state = CONN_READ;
	loop_io_init(&c->io);
	loop_timer_init(&c->timer, conn_on_timer);
	if (loop_io_add(s->loop, &c->io, fd, EPOLLIN, conn_on_io) < 0) {
		log_warn("http %s: epoll_ctl connection: %s", s->name, strerror(errno));
		close(fd);
		free(c);
		return;
	}
	loop_timer_arm(s->loop, &c->timer, s->timeout_ms);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->n_conns++;
}

static void on_accepted(struct acceptor *ac, int fd, const struct sockaddr *sa, socklen_t len)
{
	(void)sa;
	(void)len;
	struct http_server *s = container_of(ac, struct http_server, acc);
	conn_new(s, fd);
	if (s->n_conns >= HTTP_MAX_CONNS) {
		s->full = true;
		acceptor_hold(&s->acc, true);
	}
}

/* "0.0.0.0", "::", "[::1]" -> socket address with port. */
static bool parse_bind(const char *text, uint16_t port, struct sockaddr_storage *ss,
		       socklen_t *len)
{
	char buf[INET6_ADDRSTRLEN + 2];
	if (!text || !*text)
		text = "0.0.0.0";
	size_t n = strlen(text);
	if (n >= sizeof(buf))
		return false;
	memcpy(buf, text, n + 1);
	if (buf[0] == '[' && n > 2 && buf[n - 1] == ']') {
		buf[n - 1] = 0;
		memmove(buf, buf + 1, n - 1);
	}
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, buf, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons(port);
		*len = sizeof(*in4);
		return true;
	}
	if (inet_pton(AF_INET6, buf, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		*len = sizeof(*in6);
		return true;
	}
	return false;
}

bool http_bind_addr_valid(const char *text)
{
	struct sockaddr_storage ss;
	socklen_t len;
	return text && *text && parse_bind(text, 0, &ss, &len);
}

static int open_listener(struct http_server *s, const char *bind_addr, uint16_t port,
			 struct err *e)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (!parse_bind(bind_addr, port, &ss, &len))
		return err_set(e, "http server: bind address \"%s\" is not an IPv4 or IPv6 address",
			       bind_addr ? bind_addr : "");
	struct moat_addr a;
	addr_from_sockaddr((struct sockaddr *)&ss, &a, NULL);
	addr_port_str(&a, port, s->name, sizeof(s->name));
	s->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0)
		return err_set(e, "http server %s: socket: %s", s->name, strerror(errno));
	if (sock_set_int(s->fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR", e) < 0)
		return err_wrap(e, "http server %s", s->name);
	if (bind(s->fd, (struct sockaddr *)&ss, len) < 0)
		return err_set(e, "http server %s: bind: %s (is another process on this port?)",
			       s->name, strerror(errno));
	if (listen(s->fd, LISTEN_BACKLOG) < 0)
		return err_set(e, "http server %s: listen: %s", s->name, strerror(errno));
	struct sockaddr_storage bound;
	socklen_t blen = sizeof(bound);
	if (getsockname(s->fd, (struct sockaddr *)&bound, &blen) < 0)
		return err_set(e, "http server %s: getsockname: %s", s->name, strerror(errno));
	addr_from_sockaddr((struct sockaddr *)&bound, &a, &s->port);
	addr_port_str(&a, s->port, s->name, sizeof(s->name));
	char what[sizeof(s->name) + 8];
	snprintf(what, sizeof(what), "http %s", s->name);
	if (acceptor_start(&s->acc, s->loop, s->fd, HTTP_ACCEPT_BATCH, on_accepted, what) < 0)
		return err_set(e, "http server %s: epoll_ctl: %s", s->name, strerror(errno));
	return 0;
}

struct http_server *http_server_new(struct loop *l, const char *bind_addr, uint16_t port,
				    http_handler h, void *arg, struct err *e)
{
	struct http_server *s = xcalloc(1, sizeof(*s));
	s->loop = l;
	s->fd = -1;
	s->handler = h;
	s->arg = arg;
	s->timeout_ms = HTTP_DEFAULT_TIMEOUT_MS;
	if (open_listener(s, bind_addr, port, e) < 0) {
		if (s->fd >= 0)
			close(s->fd);
		free(s);
		return NULL;
	}
	return s;
}

void http_server_free(struct http_server *s)
{
	if (!s)
		return;
	while (s->conns)
		conn_close(s->conns);
	acceptor_stop(&s->acc);
	close(s->fd);
	free(s);
}

uint16_t http_server_port(const struct http_server *s)
{
	return s->port;
}

void http_server_set_timeout(struct http_server *s, uint32_t timeout_ms)
{
	s->timeout_ms = timeout_ms ? timeout_ms : HTTP_DEFAULT_TIMEOUT_MS;
}

void http_server_count_pauses(struct http_server *s, uint64_t *pauses)
{
	s->acc.pauses = pauses;
}
