/* The access-log writer (obs/access_log.c) with real descriptors: a pipe nobody reads never
 * blocks the caller (lines are dropped and counted instead), a sink that keeps up gets every
 * line whole and in order, and a clean close drains what is queued within its bound. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"
#include "obs/access_log.h"
#include "test.h"

static void make_line(char *buf, size_t len, int i)
{
	snprintf(buf, len, "{\"type\":\"connection\",\"n\":%d,\"pad\":\"%060d\"}", i, i);
}

/* Read everything the descriptor holds now; count lines and check each is whole and later
 * than the one before (strict: line k is the k-th line made, nothing skipped). */
static int read_lines(int fd, bool strict, int *bad)
{
	int prev = -1;
	char buf[8192], line[256], want[256];
	size_t ll = 0;
	int n = 0;
	for (;;) {
		ssize_t r = read(fd, buf, sizeof(buf));
		if (r <= 0)
			break;
		for (ssize_t i = 0; i < r; i++) {
			if (buf[i] != '\n') {
				if (ll < sizeof(line) - 1)
					line[ll++] = buf[i];
				continue;
			}
			line[ll] = 0;
			int k = -1;
			sscanf(line, "{\"type\":\"connection\",\"n\":%d", &k);
			make_line(want, sizeof(want), k);
			*bad += strcmp(line, want) != 0 || k <= prev || (strict && k != n);
			prev = k;
			n++;
			ll = 0;
		}
	}
	*bad += ll != 0; /* a partial line at the end */
	return n;
}

TEST(access_log_pipe_nobody_reads_never_blocks_and_drops_are_counted)
{
	int p[2];
	REQUIRE(pipe2(p, O_CLOEXEC) == 0);
	/* The pipe is full before the writer starts: it can never write a byte. */
	fcntl(p[1], F_SETFL, O_NONBLOCK);
	char line[256];
	int filler = 0;
	for (; filler < 100000; filler++) {
		make_line(line, sizeof(line), filler - 100000);
		strcat(line, "\n");
		if (write(p[1], line, strlen(line)) < 0)
			break; /* EAGAIN: full (writes of a line are atomic) */
	}
	fcntl(p[1], F_SETFL, 0);
	alarm(60); /* a writer that blocked its caller would hang here: fail instead */
	struct err e;
	struct access_log *al = access_log_open(p[1], 8192, "test pipe", &e);
	REQUIRE(al);
	enum { N = 20000 };
	for (int i = 0; i < N; i++) {
		make_line(line, sizeof(line), i);
		access_log_line(al, line);
	}
	uint64_t dropped = access_log_dropped(al);
	CHECK(dropped > 0);
	CHECK(dropped < N);
	CHECK_INT(access_log_written(al), 0);
	uint64_t left = access_log_close(al, 200); /* bounded: the reader never comes */
	alarm(0);
	CHECK_INT(left, N - dropped); /* the ring's lines, counted as dropped too */
	CHECK(left > 0);
	close(p[0]);
	close(p[1]);
}

TEST(access_log_lines_reach_a_slow_pipe_whole_and_every_one_is_accounted_for)
{
	int p[2];
	REQUIRE(pipe2(p, O_CLOEXEC) == 0);
	alarm(60);
	struct err e;
	struct access_log *al = access_log_open(p[1], 8192, "test pipe", &e);
	REQUIRE(al);
	enum { N = 20000 }; /* ~2 MB: far beyond the pipe (64 KiB) and the ring (8 KiB) */
	char line[256];
	for (int i = 0; i < N; i++) {
		make_line(line, sizeof(line), i);
		access_log_line(al, line);
	}
	uint64_t dropped = access_log_dropped(al);
	uint64_t left = access_log_close(al, 200);
	alarm(0);
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	int bad = 0;
	int got = read_lines(p[0], false, &bad);
	CHECK_INT(bad, 0); /* whatever reached the pipe is whole lines, in order */
	CHECK(got > 0);
	CHECK_INT((uint64_t)got + dropped + left, N); /* written, dropped or left: nothing else */
	close(p[0]);
	close(p[1]);
}

TEST(access_log_fast_sink_gets_every_line_in_order)
{
	char path[] = "/tmp/moat-access-XXXXXX";
	int fd = mkstemp(path);
	REQUIRE(fd >= 0);
	unlink(path);
	struct err e;
	/* A small ring wraps many times; each line waits until the writer took the previous
	 * ones, so the ring never overflows and no line may be lost. */
	struct access_log *al = access_log_open(fd, 4096, "test file", &e);
	REQUIRE(al);
	enum { N = 3000 };
	char line[256];
	int stuck = 0;
	for (int i = 0; i < N; i++) {
		make_line(line, sizeof(line), i);
		access_log_line(al, line);
		for (int w = 0; w < 5000 && access_log_written(al) < (uint64_t)i - 20 && i > 20; w++)
			usleep(1000); /* bounded: 5 s per line at most */
		stuck += access_log_written(al) + 21 < (uint64_t)i;
	}
	CHECK_INT(stuck, 0);
	for (int w = 0; w < 5000 && access_log_written(al) < N; w++)
		usleep(1000);
	/* and a burst the ring holds whole (~3 KB), drained by close */
	for (int i = N; i < N + 30; i++) {
		make_line(line, sizeof(line), i);
		access_log_line(al, line);
	}
	CHECK_INT(access_log_dropped(al), 0);
	CHECK_INT(access_log_close(al, ACCESS_LOG_DRAIN_MS), 0);
	lseek(fd, 0, SEEK_SET);
	int bad = 0;
	CHECK_INT(read_lines(fd, true, &bad), N + 30);
	CHECK_INT(bad, 0);
	close(fd);
}
