#include "core/loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"

#define BATCH 256

struct later {
	loop_later_cb fn;
	void *arg;
	struct later *next;
};

struct loop {
	int epfd;
	bool stop;
	struct epoll_event batch[BATCH];
	int batch_n, batch_i; /* events of the batch being dispatched */
	struct loop_timer **heap;
	size_t heap_n, heap_cap;
	struct later *later_head, **later_tail;
};

struct loop *loop_new(void)
{
	struct loop *l = xcalloc(1, sizeof(*l));
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		free(l);
		return NULL;
	}
	l->later_tail = &l->later_head;
	return l;
}

void loop_free(struct loop *l)
{
	if (!l)
		return;
	close(l->epfd);
	while (l->later_head) {
		struct later *n = l->later_head->next;
		free(l->later_head);
		l->later_head = n;
	}
	free(l->heap);
	free(l);
}

void loop_stop(struct loop *l)
{
	l->stop = true;
}

/* ---- fd watchers ---- */

void loop_io_init(struct loop_io *io)
{
	io->fd = -1;
	io->events = 0;
	io->cb = NULL;
}

int loop_io_add(struct loop *l, struct loop_io *io, int fd, uint32_t events, loop_io_cb cb)
{
	struct epoll_event ev = {.events = events, .data.ptr = io};
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -1;
	io->fd = fd;
	io->events = events;
	io->cb = cb;
	return 0;
}

int loop_io_mod(struct loop *l, struct loop_io *io, uint32_t events)
{
	if (io->fd < 0 || io->events == events)
		return 0;
	struct epoll_event ev = {.events = events, .data.ptr = io};
	if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, io->fd, &ev) < 0)
		return -1;
	io->events = events;
	return 0;
}

void loop_io_del(struct loop *l, struct loop_io *io)
{
	if (io->fd < 0)
		return;
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
	/* Drop this watcher's events still waiting in the current batch. */
	for (int i = l->batch_i; i < l->batch_n; i++)
		if (l->batch[i].data.ptr == io)
			l->batch[i].data.ptr = NULL;
	io->fd = -1;
	io->events = 0;
}

/* ---- timers: binary min-heap on when_ms ---- */

void loop_timer_init(struct loop_timer *t, loop_timer_cb cb)
{
	t->when_ms = 0;
	t->heap_idx = -1;
	t->cb = cb;
}

bool loop_timer_armed(const struct loop_timer *t)
{
	return t->heap_idx >= 0;
}

static void heap_swap(struct loop *l, size_t a, size_t b)
{
	struct loop_timer *t = l->heap[a];
	l->heap[a] = l->heap[b];
	l->heap[b] = t;
	l->heap[a]->heap_idx = (int)a;
	l->heap[b]->heap_idx = (int)b;
}

static void heap_up(struct loop *l, size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (l->heap[p]->when_ms <= l->heap[i]->when_ms)
			break;
		heap_swap(l, p, i);
		i = p;
	}
}

static void heap_down(struct loop *l, size_t i)
{
	for (;;) {
		size_t a = 2 * i + 1, b = a + 1, m = i;
		if (a < l->heap_n && l->heap[a]->when_ms < l->heap[m]->when_ms)
			m = a;
		if (b < l->heap_n && l->heap[b]->when_ms < l->heap[m]->when_ms)
			m = b;
		if (m == i)
			return;
		heap_swap(l, i, m);
		i = m;
	}
}

void loop_timer_cancel(struct loop *l, struct loop_timer *t)
{
	/* A timer never initialised (zeroed: index 0) may be cancelled on an early exit path:
	 * only a timer that really sits in the heap at its index is taken out. */
	if (t->heap_idx < 0 || (size_t)t->heap_idx >= l->heap_n || l->heap[t->heap_idx] != t)
		return;
	size_t i = (size_t)t->heap_idx, last = l->heap_n - 1;
	if (i != last) {
		heap_swap(l, i, last);
		l->heap_n--;
		heap_down(l, i);
		heap_up(l, i);
	} else {
		l->heap_n--;
	}
	t->heap_idx = -1;
}

void loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t delay_ms)
{
	loop_timer_cancel(l, t);
	if (l->heap_n == l->heap_cap) {
		l->heap_cap = l->heap_cap ? l->heap_cap * 2 : 64;
		l->heap = xrealloc(l->heap, l->heap_cap * sizeof(*l->heap));
	}
	t->when_ms = now_ms() + delay_ms;
	t->heap_idx = (int)l->heap_n;
	l->heap[l->heap_n++] = t;
	heap_up(l, (size_t)t->heap_idx);
}

void loop_later(struct loop *l, loop_later_cb fn, void *arg)
{
	struct later *n = xmalloc(sizeof(*n));
	n->fn = fn;
	n->arg = arg;
	n->next = NULL;
	*l->later_tail = n;
	l->later_tail = &n->next;
}

static void run_later(struct loop *l)
{
	/* Calls may queue more calls; run until the queue is empty. */
	while (l->later_head) {
		struct later *n = l->later_head;
		l->later_head = n->next;
		if (!l->later_head)
			l->later_tail = &l->later_head;
		n->fn(n->arg);
		free(n);
	}
}

static void run_timers(struct loop *l)
{
	uint64_t now = now_ms();
	while (l->heap_n && l->heap[0]->when_ms <= now) {
		struct loop_timer *t = l->heap[0];
		loop_timer_cancel(l, t);
		t->cb(t);
	}
}

int loop_run(struct loop *l)
{
	l->stop = false;
	while (!l->stop) {
		int timeout = -1;
		if (l->later_head) {
			timeout = 0;
		} else if (l->heap_n) {
			uint64_t now = now_ms(), when = l->heap[0]->when_ms;
			timeout = when <= now ? 0 : (int)(when - now > 60000 ? 60000 : when - now);
		}
		int n = epoll_wait(l->epfd, l->batch, BATCH, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		l->batch_n = n;
		for (l->batch_i = 0; l->batch_i < l->batch_n; l->batch_i++) {
			struct loop_io *io = l->batch[l->batch_i].data.ptr;
			if (io && io->cb)
				io->cb(io, l->batch[l->batch_i].events);
		}
		l->batch_n = l->batch_i = 0;
		run_timers(l);
		run_later(l);
	}
	return 0;
}
