#include "core/netns.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int netns_open(const char *path, struct err *e)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(e, "open netns %s: %s", path, strerror(errno));
	return fd;
}

int netns_enter(int target_fd, int *saved, struct err *e)
{
	*saved = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (*saved < 0)
		return err_set(e, "open own netns: %s", strerror(errno));
	if (setns(target_fd, CLONE_NEWNET) < 0) {
		int err = errno;
		close(*saved);
		*saved = -1;
		return err_set(e, "enter netns: %s", strerror(err));
	}
	return 0;
}

void netns_leave(int saved)
{
	if (saved < 0)
		return;
	if (setns(saved, CLONE_NEWNET) < 0) {
		fprintf(stderr, "moat: cannot return to own netns: %s\n", strerror(errno));
		abort();
	}
	close(saved);
}

int netns_socket(int netns_fd, int domain, int type, int protocol, struct err *e)
{
	int saved;
	if (netns_enter(netns_fd, &saved, e) < 0)
		return -1;
	int fd = socket(domain, type | SOCK_CLOEXEC, protocol);
	int err = errno;
	netns_leave(saved);
	if (fd < 0)
		return err_set(e, "socket in pod netns: %s", strerror(err));
	return fd;
}
