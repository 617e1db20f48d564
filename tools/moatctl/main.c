/* moatctl: talk to the local moatd, run the CA, check and explain policies. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moatctl.h"

static const char *socket_path;

const char *moatctl_socket(void)
{
	if (socket_path)
		return socket_path;
	const char *env = getenv("MOAT_SOCKET");
	return env && *env ? env : MOATCTL_DEFAULT_SOCKET;
}

static const char usage[] =
	"usage: moatctl [--socket PATH] COMMAND [ARGS]\n"
	"\n"
	"Pods and state (talk to moatd over its control socket, default " MOATCTL_DEFAULT_SOCKET ",\n"
	"or $MOAT_SOCKET):\n"
	"  enroll --netns PATH --cgroup PATH --namespace NS --name NAME\n"
	"         [--service-account SA] [--label k=v]... [--interface IF]\n"
	"                       hand a pod to moatd (its facts come from its WorkloadEntry;\n"
	"                       --service-account/--label when it has none)\n"
	"  unenroll --namespace NS --name NAME\n"
	"  status [-o json]     agent, configuration, BPF counters\n"
	"  workloads [-o json]  addresses moatd knows and how they are reached\n"
	"  services [-o json]   Services and selecting ServiceEntries: VIPs, ports, endpoints\n"
	"                       (address:targetPort), weights and health\n"
	"  verdicts [-o json]   the verdict cache the connect hook uses\n"
	"  connections [-o json] live proxied connections and the HBONE pool\n"
	"  certs [-o json]      workload certificates: identity, serial, validity\n"
	"  reload               reload the configuration now\n"
	"\n"
	"Policies:\n"
	"  explain [--config DIR] --from <spiffe://TD/ns/NS/sa/SA | plaintext> [--src-ip IP]\n"
	"          --to IP:PORT [-o json]\n"
	"                       would this source reach IP:PORT, and which policy decides?\n"
	"                       a service VIP:PORT: the verdict for every endpoint, and which\n"
	"                       are eligible for the weighted choice (exit 0: at least one)\n"
	"                       offline with --config, else asks moatd; exit 0 ALLOW, 1 DENY,\n"
	"                       2 bad input\n"
	"  lint DIR             check a configuration directory: what cannot be enforced at L4,\n"
	"                       Services selecting nothing, targetPort names no endpoint has\n"
	"\n"
	"CA:\n"
	"  ca init --trust-domain TD --out DIR\n";

int main(int argc, char **argv)
{
	int i = 1;
	while (i < argc && argv[i][0] == '-') {
		if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
			socket_path = argv[i + 1];
			i += 2;
		} else if (strncmp(argv[i], "--socket=", 9) == 0) {
			socket_path = argv[i] + 9;
			i++;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			fputs(usage, stdout);
			return 0;
		} else {
			fprintf(stderr, "moatctl: unknown option %s\n%s", argv[i], usage);
			return 2;
		}
	}
	if (i >= argc) {
		fputs(usage, stderr);
		return 2;
	}
	const char *cmd = argv[i];
	int sub_argc = argc - i;
	char **sub_argv = argv + i;
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {
		{"enroll", cmd_enroll},     {"unenroll", cmd_unenroll}, {"status", cmd_show},
		{"workloads", cmd_show},    {"verdicts", cmd_show},     {"connections", cmd_show},
		{"certs", cmd_show},        {"reload", cmd_show},       {"explain", cmd_explain},
		{"lint", cmd_lint},         {"ca", cmd_ca},             {"services", cmd_show},
	};
	for (size_t k = 0; k < sizeof(cmds) / sizeof(cmds[0]); k++)
		if (strcmp(cmds[k].name, cmd) == 0)
			return cmds[k].fn(sub_argc, sub_argv);
	if (strcmp(cmd, "help") == 0) {
		fputs(usage, stdout);
		return 0;
	}
	fprintf(stderr, "moatctl: unknown command \"%s\"\n%s", cmd, usage);
	return 2;
}
