/* moatctl commands that talk to moatd: enroll, unenroll, status and the listings. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl/ctl.h"
#include "moatctl.h"

#define MAX_ARGS 64

static int call(const char *what, const char *verb, const struct ctl_arg *args, int n, int fd)
{
	int status = 2;
	char *body = NULL;
	struct err e = {{0}};
	if (ctl_call(moatctl_socket(), verb, args, n, fd, &status, &body, &e) < 0) {
		fprintf(stderr, "moatctl %s: %s\n", what, e.msg);
		return 2;
	}
	fputs(body, status == 0 ? stdout : stderr);
	free(body);
	return status;
}

int cmd_enroll(int argc, char **argv)
{
	static const struct option opts[] = {
		{"netns", required_argument, 0, 'n'},   {"cgroup", required_argument, 0, 'c'},
		{"namespace", required_argument, 0, 's'}, {"name", required_argument, 0, 'm'},
		{"service-account", required_argument, 0, 'a'}, {"label", required_argument, 0, 'l'},
		{"interface", required_argument, 0, 'i'}, {"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	struct ctl_arg args[MAX_ARGS];
	int n = 0, c;
	const char *netns = NULL, *cgroup = NULL, *ns = NULL, *name = NULL;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (n >= MAX_ARGS - 1) {
			fprintf(stderr, "moatctl enroll: too many arguments\n");
			return 2;
		}
		switch (c) {
		case 'n': netns = optarg; break;
		case 'c': cgroup = optarg; args[n++] = (struct ctl_arg){"cgroup", optarg}; break;
		case 's': ns = optarg; args[n++] = (struct ctl_arg){"namespace", optarg}; break;
		case 'm': name = optarg; args[n++] = (struct ctl_arg){"name", optarg}; break;
		case 'a': args[n++] = (struct ctl_arg){"service_account", optarg}; break;
		case 'l':
			if (!strchr(optarg, '=')) {
				fprintf(stderr, "moatctl enroll: --label %s: expected key=value\n", optarg);
				return 2;
			}
			args[n++] = (struct ctl_arg){"label", optarg};
			break;
		case 'i': args[n++] = (struct ctl_arg){"interface", optarg}; break;
		case 'h':
			printf("usage: moatctl enroll --netns PATH --cgroup PATH --namespace NS --name NAME\n"
			       "       [--service-account SA] [--label k=v]... [--interface IF]\n"
			       "Refused: the node's own netns, another pod's netns, and pods labelled\n"
			       "istio.io/dataplane-mode=none (WorkloadEntry, --label or Namespace).\n"
			       "Enrolling a running pod again with another netns replaces it only if\n"
			       "the new enrollment succeeds.\n");
			return 0;
		default: return 2;
		}
	}
	if (!netns || !cgroup || !ns || !name) {
		fprintf(stderr, "moatctl enroll: --netns, --cgroup, --namespace and --name are "
				"required\n");
		return 2;
	}
	/* The path lets moatd take the pod back after a restart; the descriptor proves it. */
	char *abs = realpath(netns, NULL);
	if (abs)
		args[n++] = (struct ctl_arg){"netns_path", abs};
	int fd = open(netns, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "moatctl enroll: open netns %s: %s\n", netns, strerror(errno));
		free(abs);
		return 2;
	}
	if (access(cgroup, F_OK) < 0) {
		fprintf(stderr, "moatctl enroll: cgroup %s: %s\n", cgroup, strerror(errno));
		close(fd);
		free(abs);
		return 2;
	}
	int rc = call("enroll", "enroll", args, n, fd);
	close(fd);
	free(abs);
	return rc;
}

int cmd_unenroll(int argc, char **argv)
{
	static const struct option opts[] = {
		{"namespace", required_argument, 0, 's'}, {"name", required_argument, 0, 'm'},
		{0, 0, 0, 0},
	};
	const char *ns = NULL, *name = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 's')
			ns = optarg;
		else if (c == 'm')
			name = optarg;
		else
			return 2;
	}
	if (!ns || !name) {
		fprintf(stderr, "moatctl unenroll: --namespace and --name are required\n");
		return 2;
	}
	struct ctl_arg args[] = {{"namespace", ns}, {"name", name}};
	return call("unenroll", "unenroll", args, 2, -1);
}

/* status | workloads | services | verdicts | connections | certs | reload [-o json] */
int cmd_show(int argc, char **argv)
{
	const char *output = "text";
	for (int i = 1; i < argc; i++) {
		if ((strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--output") == 0) && i + 1 < argc) {
			output = argv[++i];
		} else if (strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--output") == 0) {
			fprintf(stderr, "moatctl %s: -o needs json or text\n", argv[0]);
			return 2;
		} else {
			fprintf(stderr, "moatctl %s: unexpected argument %s\n", argv[0], argv[i]);
			return 2;
		}
	}
	if (strcmp(output, "json") != 0 && strcmp(output, "text") != 0) {
		fprintf(stderr, "moatctl %s: -o %s: expected json or text\n", argv[0], output);
		return 2;
	}
	struct ctl_arg args[] = {{"output", output}};
	return call(argv[0], argv[0], args, 1, -1);
}
