/* Small shared helpers: errors with context, allocation, addresses, text buffers. */
#ifndef MOAT_CORE_UTIL_H
#define MOAT_CORE_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "moat/abi.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* An error with its context, e.g. "connect 10.1.0.2:8080 from pod ns1/web: ECONNREFUSED".
 * Functions that can fail take a `struct err *` (may be NULL) and return -1 after err_set. */
struct err {
	char msg[768];
};

int err_set(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix an existing message: err_wrap(e, "load %s", path) -> "load x: <old message>". */
int err_wrap(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Allocation that aborts with a message on exhaustion (moatd cannot run without memory). */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Grow a dynamic array `T *items; size_t n, cap;` by one and return a pointer to the new
 * zeroed slot. */
#define VEC_PUSH(arr, n, cap)                                                         \
	((void)vec_grow((void **)&(arr), &(n), &(cap), sizeof(*(arr))), &(arr)[(n)++])
void **vec_grow(void **arr, size_t *n, size_t *cap, size_t elem);

/* ---- addresses: struct moat_addr is 16 bytes, IPv4 as ::ffff:a.b.c.d ---- */
bool addr_parse(const char *text, struct moat_addr *out);
bool addr_is_v4(const struct moat_addr *a);
/* "10.1.0.2" or "fd00::1" */
const char *addr_str(const struct moat_addr *a, char *buf, size_t len);
#define ADDR_STRLEN 64
/* "10.1.0.2:8080" or "[fd00::1]:8080" */
const char *addr_port_str(const struct moat_addr *a, uint16_t port, char *buf, size_t len);
bool addr_eq(const struct moat_addr *a, const struct moat_addr *b);
bool addr_is_zero(const struct moat_addr *a);
bool addr_is_loopback(const struct moat_addr *a);
void addr_from_v4(struct moat_addr *out, uint32_t be_addr);
/* Socket address conversions (AF_INET and AF_INET6; v4-mapped v6 is normalised). */
void addr_from_sockaddr(const struct sockaddr *sa, struct moat_addr *out, uint16_t *port);
socklen_t addr_to_sockaddr(const struct moat_addr *a, uint16_t port, struct sockaddr_storage *ss);
/* A workload's addresses (dual stack): is a among list[0..n)? The first of like's family
 * (IPv4 / IPv6), else list[0] (n >= 1). */
bool addr_list_has(const struct moat_addr *list, size_t n, const struct moat_addr *a);

/* accept() failed for want of descriptors or kernel memory (EMFILE, ENFILE, ENOBUFS,
 * ENOMEM): the connection stays queued and a level-triggered listener stays readable, so
 * every listener (pod ports, control socket, HTTP) pauses accepting for ACCEPT_PAUSE_MS
 * instead of spinning. */
#define ACCEPT_PAUSE_MS 100
bool accept_err_is_pressure(int err);
const struct moat_addr *addr_list_like(const struct moat_addr *list, size_t n,
				       const struct moat_addr *like);
/* Parse "ip:port" / "[ip6]:port". */
bool addr_port_parse(const char *text, struct moat_addr *out, uint16_t *port);

/* CIDR block (bare address = /32 or /128). prefix is counted on the 128-bit form. */
struct cidr {
	struct moat_addr addr;
	uint8_t prefix; /* 0..128 on the mapped form */
};
bool cidr_parse(const char *text, struct cidr *out);
bool cidr_contains(const struct cidr *c, const struct moat_addr *a);
const char *cidr_str(const struct cidr *c, char *buf, size_t len);

/* ---- text buffer ---- */
struct sbuf {
	char *s;
	size_t len, cap;
};
void sbuf_init(struct sbuf *b);
void sbuf_free(struct sbuf *b);
void sbuf_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sbuf_vprintf(struct sbuf *b, const char *fmt, va_list ap);
void sbuf_append(struct sbuf *b, const char *s, size_t n);
void sbuf_puts(struct sbuf *b, const char *s);
/* Append s as a JSON string literal, quotes included ("null" when s is NULL). */
void sbuf_json_str(struct sbuf *b, const char *s);
/* Take the buffer's string; the sbuf is reset. */
char *sbuf_take(struct sbuf *b);

/* ---- misc ---- */
/* "ECONNREFUSED" (the errno's name; numbers for unknown ones). */
const char *errno_name(int err);
uint64_t now_ms(void);         /* CLOCK_MONOTONIC */
uint64_t now_ns(void);         /* CLOCK_MONOTONIC */
int64_t wall_ms(void);         /* CLOCK_REALTIME */
/* "2026-11-22T22:05:43.123Z" */
const char *iso8601_ms(int64_t wall, char *buf, size_t len);
int set_nonblock(int fd);
/* A connected TCP pair on 127.0.0.1 (ephemeral port), both ends blocking, close-on-exec:
 * for probes and tests. 0, or -1 with errno set and nothing left open. */
int tcp_loopback_pair(int sv[2]);
/* Close a TCP socket with a reset (SO_LINGER 0): how moat refuses or aborts a connection. */
void close_rst(int fd);
/* TCP_NODELAY: tunnels and relays move small frames; Nagle would add 40 ms stalls. */
void sock_nodelay(int fd);
int set_cloexec(int fd);
/* Read a whole file (NUL-terminated). */
char *read_file(const char *path, size_t *len, struct err *e);
/* The same, reading at most max bytes (a bound for files that may be huge or endless). */
char *read_file_max(const char *path, size_t max, size_t *len, struct err *e);
/* Write a file atomically (temp + rename) with the given mode. */
int write_file_atomic(const char *path, const void *data, size_t len, int mode, struct err *e);
int mkdir_p(const char *path, int mode);

#endif
