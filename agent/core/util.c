#include "core/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int err_set(struct err *e, const char *fmt, ...)
{
	if (!e)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	return -1;
}

int err_wrap(struct err *e, const char *fmt, ...)
{
	if (!e)
		return -1;
	char prefix[sizeof(e->msg)], old[sizeof(e->msg)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, e->msg, sizeof(old));
	/* Truncation is acceptable: the message stays NUL-terminated and readable. */
	size_t pl = strnlen(prefix, sizeof(e->msg) - 3);
	memcpy(e->msg, prefix, pl);
	memcpy(e->msg + pl, ": ", 2);
	size_t room = sizeof(e->msg) - pl - 3;
	size_t ol = strnlen(old, room);
	memcpy(e->msg + pl + 2, old, ol);
	e->msg[pl + 2 + ol] = 0;
	return -1;
}

static void oom(size_t n)
{
	fprintf(stderr, "moat: out of memory allocating %zu bytes\n", n);
	abort();
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom(n);
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		oom(n * size);
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		oom(n);
	return q;
}

char *xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = 0;
	return p;
}

char *xasprintf(const char *fmt, ...)
{
	char *p;
	va_list ap;
	va_start(ap, fmt);
	if (vasprintf(&p, fmt, ap) < 0)
		oom(strlen(fmt));
	va_end(ap);
	return p;
}

void **vec_grow(void **arr, size_t *n, size_t *cap, size_t elem)
{
	if (*n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 4;
		*arr = xrealloc(*arr, ncap * elem);
		memset((char *)*arr + *cap * elem, 0, (ncap - *cap) * elem);
		*cap = ncap;
	}
	return arr;
}

/* ---- addresses ---- */

static const uint8_t v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

void addr_from_v4(struct moat_addr *out, uint32_t be_addr)
{
	memcpy(out->bytes, v4_prefix, 12);
	memcpy(out->bytes + 12, &be_addr, 4);
}

bool addr_is_v4(const struct moat_addr *a)
{
	return memcmp(a->bytes, v4_prefix, 12) == 0;
}

bool addr_parse(const char *text, struct moat_addr *out)
{
	struct in_addr v4;
	if (!text || !*text)
		return false;
	if (inet_pton(AF_INET, text, &v4) == 1) {
		addr_from_v4(out, v4.s_addr);
		return true;
	}
	return inet_pton(AF_INET6, text, out->bytes) == 1;
}

const char *addr_str(const struct moat_addr *a, char *buf, size_t len)
{
	if (addr_is_v4(a))
		inet_ntop(AF_INET, a->bytes + 12, buf, len);
	else
		inet_ntop(AF_INET6, a->bytes, buf, len);
	return buf;
}

const char *addr_port_str(const struct moat_addr *a, uint16_t port, char *buf, size_t len)
{
	char tmp[ADDR_STRLEN];
	addr_str(a, tmp, sizeof(tmp));
	if (addr_is_v4(a))
		snprintf(buf, len, "%s:%u", tmp, port);
	else
		snprintf(buf, len, "[%s]:%u", tmp, port);
	return buf;
}

bool addr_eq(const struct moat_addr *a, const struct moat_addr *b)
{
	return memcmp(a->bytes, b->bytes, 16) == 0;
}

bool accept_err_is_pressure(int err)
{
	return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

bool addr_list_has(const struct moat_addr *list, size_t n, const struct moat_addr *a)
{
	for (size_t i = 0; i < n; i++)
		if (addr_eq(&list[i], a))
			return true;
	return false;
}

const struct moat_addr *addr_list_like(const struct moat_addr *list, size_t n,
				       const struct moat_addr *like)
{
	for (size_t i = 0; i < n; i++)
		if (addr_is_v4(&list[i]) == addr_is_v4(like))
			return &list[i];
	return &list[0];
}

bool addr_is_zero(const struct moat_addr *a)
{
	static const struct moat_addr zero;
	return addr_eq(a, &zero);
}

bool addr_is_loopback(const struct moat_addr *a)
{
	static const uint8_t v6_lo[16] = {[15] = 1};
	if (addr_is_v4(a))
		return a->bytes[12] == 127;
	return memcmp(a->bytes, v6_lo, 16) == 0;
}

void addr_from_sockaddr(const struct sockaddr *sa, struct moat_addr *out, uint16_t *port)
{
	memset(out, 0, sizeof(*out));
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		addr_from_v4(out, s4->sin_addr.s_addr);
		if (port)
			*port = ntohs(s4->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		memcpy(out->bytes, &s6->sin6_addr, 16);
		if (port)
			*port = ntohs(s6->sin6_port);
	} else if (port) {
		*port = 0;
	}
}

socklen_t addr_to_sockaddr(const struct moat_addr *a, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (addr_is_v4(a)) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		memcpy(&s4->sin_addr, a->bytes + 12, 4);
		return sizeof(*s4);
	}
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	s6->sin6_family = AF_INET6;
	s6->sin6_port = htons(port);
	memcpy(&s6->sin6_addr, a->bytes, 16);
	return sizeof(*s6);
}

bool addr_port_parse(const char *text, struct moat_addr *out, uint16_t *port)
{
	char host[ADDR_STRLEN];
	const char *colon;
	if (!text)
		return false;
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (!close || close[1] != ':' || (size_t)(close - text - 1) >= sizeof(host))
			return false;
		memcpy(host, text + 1, close - text - 1);
		host[close - text - 1] = 0;
		colon = close + 1;
		if (addr_parse(host, out) && addr_is_v4(out))
			return false; /* brackets are for IPv6 only */
	} else {
		colon = strrchr(text, ':');
		if (!colon || (size_t)(colon - text) >= sizeof(host))
			return false;
		memcpy(host, text, colon - text);
		host[colon - text] = 0;
		if (strchr(host, ':'))
			return false; /* IPv6 needs brackets */
	}
	if (!addr_parse(host, out))
		return false;
	/* Strict decimal: digits only, no sign, no space, no leading zero ("08080" is not a
	 * port an HBONE peer may send: strtol alone would take it, and "+8080" too). */
	const char *d = colon + 1;
	long p = 0;
	if (*d == '0' || !*d)
		return false;
	for (; *d; d++) {
		if (*d < '0' || *d > '9' || p > 65535)
			return false;
		p = p * 10 + (*d - '0');
	}
	if (p < 1 || p > 65535)
		return false;
	*port = (uint16_t)p;
	return true;
}

bool cidr_parse(const char *text, struct cidr *out)
{
	char host[ADDR_STRLEN];
	const char *slash = strchr(text, '/');
	size_t hl = slash ? (size_t)(slash - text) : strlen(text);
	if (hl == 0 || hl >= sizeof(host))
		return false;
	memcpy(host, text, hl);
	host[hl] = 0;
	if (!addr_parse(host, &out->addr))
		return false;
	bool v4 = addr_is_v4(&out->addr);
	int max = v4 ? 32 : 128;
	int pfx = max;
	if (slash) {
		char *end;
		errno = 0;
		long v = strtol(slash + 1, &end, 10);
		if (errno || *end || end == slash + 1 || v < 0 || v > max)
			return false;
		pfx = (int)v;
	}
	out->prefix = (uint8_t)(v4 ? pfx + 96 : pfx);
	/* Clear host bits so comparisons are exact. */
	for (int bit = out->prefix; bit < 128; bit++)
		out->addr.bytes[bit / 8] &= (uint8_t)~(0x80 >> (bit % 8));
	return true;
}

bool cidr_contains(const struct cidr *c, const struct moat_addr *a)
{
	int full = c->prefix / 8, rest = c->prefix % 8;
	if (memcmp(c->addr.bytes, a->bytes, full) != 0)
		return false;
	if (rest) {
		uint8_t mask = (uint8_t)(0xff << (8 - rest));
		if ((c->addr.bytes[full] & mask) != (a->bytes[full] & mask))
			return false;
	}
	return true;
}

const char *cidr_str(const struct cidr *c, char *buf, size_t len)
{
	char tmp[ADDR_STRLEN];
	addr_str(&c->addr, tmp, sizeof(tmp));
	snprintf(buf, len, "%s/%u", tmp, addr_is_v4(&c->addr) ? c->prefix - 96 : c->prefix);
	return buf;
}

/* ---- text buffer ---- */

void sbuf_init(struct sbuf *b)
{
	b->s = NULL;
	b->len = b->cap = 0;
}

void sbuf_free(struct sbuf *b)
{
	free(b->s);
	sbuf_init(b);
}

static void sbuf_reserve(struct sbuf *b, size_t extra)
{
	if (b->len + extra + 1 <= b->cap)
		return;
	size_t ncap = b->cap ? b->cap : 256;
	while (ncap < b->len + extra + 1)
		ncap *= 2;
	b->s = xrealloc(b->s, ncap);
	b->cap = ncap;
}

void sbuf_vprintf(struct sbuf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return;
	sbuf_reserve(b, (size_t)n);
	vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
}

void sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	sbuf_vprintf(b, fmt, ap);
	va_end(ap);
}

void sbuf_append(struct sbuf *b, const char *s, size_t n)
{
	sbuf_reserve(b, n);
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = 0;
}

void sbuf_puts(struct sbuf *b, const char *s)
{
	sbuf_append(b, s, strlen(s));
}

void sbuf_json_str(struct sbuf *b, const char *s)
{
	if (!s) {
		sbuf_puts(b, "null");
		return;
	}
	sbuf_append(b, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"': sbuf_puts(b, "\\\""); break;
		case '\\': sbuf_puts(b, "\\\\"); break;
		case '\n': sbuf_puts(b, "\\n"); break;
		case '\r': sbuf_puts(b, "\\r"); break;
		case '\t': sbuf_puts(b, "\\t"); break;
		default:
			if (*p < 0x20)
				sbuf_printf(b, "\\u%04x", *p);
			else
				sbuf_append(b, (const char *)p, 1);
		}
	}
	sbuf_append(b, "\"", 1);
}

char *sbuf_take(struct sbuf *b)
{
	char *s = b->s ? b->s : xstrdup("");
	sbuf_init(b);
	return s;
}

/* ---- misc ---- */

const char *errno_name(int err)
{
	const char *n = strerrorname_np(err);
	return n ? n : "EUNKNOWN";
}

uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t now_ms(void)
{
	return now_ns() / 1000000ull;
}

int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *iso8601_ms(int64_t wall, char *buf, size_t len)
{
	time_t secs = (time_t)(wall / 1000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	char date[32];
	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, len, "%s.%03dZ", date, (int)(wall % 1000));
	return buf;
}

int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -1;
	return fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

void close_rst(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

void sock_nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int set_cloexec(int fd)
{
	int fl = fcntl(fd, F_GETFD);
	if (fl < 0)
		return -1;
	return fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
}

char *read_file(const char *path, size_t *len, struct err *e)
{
	return read_file_max(path, SIZE_MAX, len, e);
}

char *read_file_max(const char *path, size_t max, size_t *len, struct err *e)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err_set(e, "open %s: %s", path, strerror(errno));
		return NULL;
	}
	struct sbuf b;
	sbuf_init(&b);
	char chunk[65536];
	while (b.len < max) {
		size_t want = max - b.len < sizeof(chunk) ? max - b.len : sizeof(chunk);
		ssize_t n = read(fd, chunk, want);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err_set(e, "read %s: %s", path, strerror(errno));
			close(fd);
			sbuf_free(&b);
			return NULL;
		}
		if (n == 0)
			break;
		sbuf_append(&b, chunk, (size_t)n);
	}
	close(fd);
	if (len)
		*len = b.len;
	return sbuf_take(&b);
}

int write_file_atomic(const char *path, const void *data, size_t len, int mode, struct err *e)
{
	char *tmp = xasprintf("%s.tmp.%d", path, (int)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0) {
		err_set(e, "create %s: %s", tmp, strerror(errno));
		free(tmp);
		return -1;
	}
	const char *p = data;
	size_t left = len;
	while (left) {
		ssize_t n = write(fd, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err_set(e, "write %s: %s", tmp, strerror(errno));
			close(fd);
			unlink(tmp);
			free(tmp);
			return -1;
		}
		p += n;
		left -= (size_t)n;
	}
	if (fchmod(fd, (mode_t)mode) < 0 || fsync(fd) < 0 || close(fd) < 0) {
		err_set(e, "finish %s: %s", tmp, strerror(errno));
		unlink(tmp);
		free(tmp);
		return -1;
	}
	if (rename(tmp, path) < 0) {
		err_set(e, "rename %s -> %s: %s", tmp, path, strerror(errno));
		unlink(tmp);
		free(tmp);
		return -1;
	}
	free(tmp);
	return 0;
}

int mkdir_p(const char *path, int mode)
{
	char buf[4096];
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, (mode_t)mode) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(buf, (mode_t)mode) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

int tcp_loopback_pair(int sv[2])
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), c = -1, s = -1, saved;
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &al) < 0)
		goto fail;
	c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) < 0)
		goto fail;
	s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (s < 0)
		goto fail;
	close(l);
	sv[0] = c;
	sv[1] = s;
	return 0;
fail:
	saved = errno;
	if (c >= 0)
		close(c);
	if (l >= 0)
		close(l);
	errno = saved;
	return -1;
}
