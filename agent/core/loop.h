/* The agent's event loop: epoll for sockets, a heap of timers, deferred calls.
 * Single-threaded; every callback runs on the loop thread. Watchers and timers are embedded
 * in their owners (no allocation per registration). loop_io_del() may be called from any
 * callback, also for a watcher whose event is still pending in the current batch: that
 * event is dropped. To free an owner from inside a callback, unregister first, then free
 * (or use loop_later() to free after the batch). */
#ifndef MOAT_CORE_LOOP_H
#define MOAT_CORE_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

struct loop;
struct loop_io;
struct loop_timer;

typedef void (*loop_io_cb)(struct loop_io *io, uint32_t events);
typedef void (*loop_timer_cb)(struct loop_timer *t);
typedef void (*loop_later_cb)(void *arg);

struct loop_io {
	int fd;          /* -1 when not registered */
	uint32_t events; /* EPOLLIN / EPOLLOUT (level-triggered) */
	loop_io_cb cb;
};

struct loop_timer {
	uint64_t when_ms; /* CLOCK_MONOTONIC deadline */
	int heap_idx;     /* -1 when not armed */
	loop_timer_cb cb;
};

struct loop *loop_new(void);
void loop_free(struct loop *l);
/* Run until loop_stop(); returns 0, or -1 if epoll fails. */
int loop_run(struct loop *l);
void loop_stop(struct loop *l);

void loop_io_init(struct loop_io *io);
int loop_io_add(struct loop *l, struct loop_io *io, int fd, uint32_t events, loop_io_cb cb);
int loop_io_mod(struct loop *l, struct loop_io *io, uint32_t events);
void loop_io_del(struct loop *l, struct loop_io *io);

void loop_timer_init(struct loop_timer *t, loop_timer_cb cb);
/* (Re)arm to fire once after delay_ms. */
void loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t delay_ms);
void loop_timer_cancel(struct loop *l, struct loop_timer *t);
bool loop_timer_armed(const struct loop_timer *t);

/* Call fn(arg) once, after the current batch of events (allocates a small record). */
void loop_later(struct loop *l, loop_later_cb fn, void *arg);

#endif
