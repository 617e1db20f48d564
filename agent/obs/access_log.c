#include "obs/access_log.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

#define WRITER_POLL_MS 100 /* the writer looks at the stop flag at least this often */

struct access_log {
	int fd;
	size_t chunk_max;      /* per write(): PIPE_BUF for pipes, so one never blocks */
	char name[256];
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;   /* data queued or closing (writer waits) */
	pthread_cond_t idle;   /* ring empty or writer gone (close waits) */
	/* under lock */
	char *ring;
	size_t cap, head, len; /* unread bytes: [head, head + len) modulo cap */
	bool closing, writer_done;
	bool abandon;          /* the drain time is over: stop even with lines queued */
	uint64_t written, dropped;
	/* loop thread only */
	uint64_t drop_logged_ms, drop_logged_count;
};

/* Copy up to max unread bytes into out, ending at a line's end when one fits, so a sink
 * that stops taking bytes holds whole lines (writes up to PIPE_BUF to a pipe are atomic).
 * Lock held. */
static size_t ring_take(const struct access_log *al, char *out, size_t max)
{
	size_t n = al->len < max ? al->len : max;
	size_t first = n < al->cap - al->head ? n : al->cap - al->head;
	memcpy(out, al->ring + al->head, first);
	memcpy(out + first, al->ring, n - first);
	size_t whole = n;
	while (whole > 0 && out[whole - 1] != '\n')
		whole--;
	return whole ? whole : n; /* a line longer than max goes in pieces */
}

static uint64_t count_lines(const char *p, size_t n)
{
	uint64_t lines = 0;
	for (size_t i = 0; i < n; i++)
		lines += p[i] == '\n';
	return lines;
}

/* Write one chunk (a copy of the ring's head); false when the sink failed for good. */
static bool write_chunk(struct access_log *al, const char *buf, size_t n)
{
	struct pollfd pfd = {.fd = al->fd, .events = POLLOUT};
	int pr = poll(&pfd, 1, WRITER_POLL_MS);
	if (pr == 0 || (pr < 0 && errno == EINTR))
		return true; /* not writable yet: look at the stop flag, try again */
	if (pr < 0 || pfd.revents & (POLLERR | POLLNVAL)) {
		/* e.g. a pipe whose reader went away: writing would only raise SIGPIPE */
		log_error("access log %s: %s: lines from now on are dropped", al->name,
			  pr < 0 ? strerror(errno) : "the sink is closed or failed");
		return false;
	}
	if (!(pfd.revents & POLLOUT))
		return true;
	ssize_t w = write(al->fd, buf, n);
	if (w < 0 && (errno == EINTR || errno == EAGAIN))
		return true;
	pthread_mutex_lock(&al->lock);
	if (w > 0) {
		al->written += count_lines(buf, (size_t)w);
		al->head = (al->head + (size_t)w) % al->cap;
		al->len -= (size_t)w;
		if (al->len == 0)
			al->head = 0; /* start over: the pages in use follow the backlog, not the cap */
	}
	pthread_mutex_unlock(&al->lock);
	if (w < 0) {
		log_error("access log %s: %s: lines from now on are dropped", al->name,
			  strerror(errno));
		return false;
	}
	return true;
}

static void *writer_main(void *arg)
{
	struct access_log *al = arg;
	char *buf = xmalloc(al->chunk_max);
	pthread_mutex_lock(&al->lock);
	for (;;) {
		while (al->len == 0 && !al->closing)
			pthread_cond_wait(&al->wake, &al->lock);
		if (al->len == 0)
			break; /* closing and drained */
		size_t n = ring_take(al, buf, al->chunk_max);
		pthread_mutex_unlock(&al->lock);
		bool ok = write_chunk(al, buf, n);
		pthread_mutex_lock(&al->lock);
		if (al->len == 0)
			pthread_cond_broadcast(&al->idle);
		if (!ok || al->abandon)
			break;
	}
	al->writer_done = true;
	pthread_cond_broadcast(&al->idle);
	pthread_mutex_unlock(&al->lock);
	free(buf);
	return NULL;
}

struct access_log *access_log_open(int fd, size_t ring_bytes, const char *name, struct err *e)
{
	struct stat st;
	if (fstat(fd, &st) < 0) {
		err_set(e, "access log %s: %s", name, strerror(errno));
		return NULL;
	}
	struct access_log *al = xcalloc(1, sizeof(*al));
	al->fd = fd;
	/* A blocking pipe or socket that polls writable takes PIPE_BUF bytes without blocking;
	 * a regular file is always writable. */
	al->chunk_max = S_ISREG(st.st_mode) ? 64 * 1024 : PIPE_BUF;
	snprintf(al->name, sizeof(al->name), "%s", name);
	al->cap = ring_bytes < ACCESS_LOG_RING_MIN ? ACCESS_LOG_RING_MIN : ring_bytes;
	/* Its own mapping, so access_log_trim can hand the pages back (MADV_DONTNEED). */
	al->ring = mmap(NULL, al->cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (al->ring == MAP_FAILED) {
		err_set(e, "access log %s: ring of %zu bytes: %s", name, al->cap, strerror(errno));
		free(al);
		return NULL;
	}
	pthread_mutex_init(&al->lock, NULL);
	pthread_cond_init(&al->wake, NULL);
	pthread_cond_init(&al->idle, NULL);
	/* The writer takes no signal: moatd reads SIGTERM/SIGHUP through a signalfd, which only
	 * works while every thread blocks them (a thread that did not would be killed by one). */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int rc = pthread_create(&al->thread, NULL, writer_main, al);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		err_set(e, "access log %s: writer thread: %s", name, strerror(rc));
		munmap(al->ring, al->cap);
		free(al);
		return NULL;
	}
	return al;
}

/* The ring was full: say so once per ACCESS_LOG_DROP_LOG_MS (on the loop thread). */
static void report_drops(struct access_log *al, uint64_t dropped)
{
	uint64_t now = now_ms();
	if (al->drop_logged_ms && now - al->drop_logged_ms < ACCESS_LOG_DROP_LOG_MS)
		return;
	log_warn("access log %s: the sink is not keeping up: %llu lines dropped (%llu since the "
		 "last report; ring of %zu bytes full; moat_access_log_dropped_total)",
		 al->name, (unsigned long long)dropped,
		 (unsigned long long)(dropped - al->drop_logged_count), al->cap);
	al->drop_logged_ms = now;
	al->drop_logged_count = dropped;
}

void access_log_line(struct access_log *al, const char *line)
{
	size_t n = strlen(line);
	pthread_mutex_lock(&al->lock);
	bool fits = !al->writer_done && n + 1 <= al->cap - al->len;
	if (fits) {
		size_t tail = (al->head + al->len) % al->cap;
		size_t first = n < al->cap - tail ? n : al->cap - tail;
		memcpy(al->ring + tail, line, first);
		memcpy(al->ring, line + first, n - first);
		al->ring[(tail + n) % al->cap] = '\n';
		al->len += n + 1;
		pthread_cond_signal(&al->wake);
	} else {
		al->dropped++;
	}
	uint64_t dropped = al->dropped;
	pthread_mutex_unlock(&al->lock);
	if (!fits)
		report_drops(al, dropped);
}

void access_log_sink(void *arg, const char *line)
{
	access_log_line(arg, line);
}

uint64_t access_log_dropped(const struct access_log *al)
{
	struct access_log *m = (struct access_log *)al; /* the lock is not part of the value */
	pthread_mutex_lock(&m->lock);
	uint64_t n = m->dropped;
	pthread_mutex_unlock(&m->lock);
	return n;
}

uint64_t access_log_written(const struct access_log *al)
{
	struct access_log *m = (struct access_log *)al;
	pthread_mutex_lock(&m->lock);
	uint64_t n = m->written;
	pthread_mutex_unlock(&m->lock);
	return n;
}

void access_log_trim(struct access_log *al)
{
	if (!al)
		return;
	pthread_mutex_lock(&al->lock);
	if (al->len == 0) /* nothing queued: every page of the ring is free to go */
		madvise(al->ring, al->cap, MADV_DONTNEED);
	pthread_mutex_unlock(&al->lock);
}

uint64_t access_log_close(struct access_log *al, int drain_ms)
{
	if (!al)
		return 0;
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += drain_ms / 1000;
	deadline.tv_nsec += (long)(drain_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&al->lock);
	al->closing = true;
	pthread_cond_signal(&al->wake);
	while (!al->writer_done) {
		if (pthread_cond_timedwait(&al->idle, &al->lock, &deadline) == ETIMEDOUT)
			break;
	}
	if (!al->writer_done) {
		/* Out of time: the writer stops after its current poll or write; a write blocked
		 * on a sink that never reads is not waited for. */
		al->abandon = true;
		deadline.tv_sec += (WRITER_POLL_MS * 3) / 1000 + 1;
		while (!al->writer_done)
			if (pthread_cond_timedwait(&al->idle, &al->lock, &deadline) == ETIMEDOUT)
				break;
	}
	bool done = al->writer_done;
	/* what is still queued will not be written: whole lines, counted as dropped */
	uint64_t left = 0;
	for (size_t i = 0; i < al->len; i++)
		left += al->ring[(al->head + i) % al->cap] == '\n';
	al->dropped += left;
	pthread_mutex_unlock(&al->lock);
	if (left)
		log_warn("access log %s: %llu lines not written at shutdown (the sink did not take "
			 "them within %d ms)", al->name, (unsigned long long)left, drain_ms);
	if (!done) {
		/* Blocked in write() on a sink that never reads: leave it; the process ends. */
		pthread_detach(al->thread);
		return left;
	}
	pthread_join(al->thread, NULL);
	pthread_cond_destroy(&al->wake);
	pthread_cond_destroy(&al->idle);
	pthread_mutex_destroy(&al->lock);
	munmap(al->ring, al->cap);
	free(al);
	return left;
}
