/* moatctl explain and lint: the policy engine, offline (a configuration directory) or live
 * (moatd answers with the same engine, on the configuration it enforces). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config/config.h"
#include "ctl/ctl.h"
#include "moatctl.h"
#include "policy/authz.h"
#include "state/services.h"

static const char explain_usage[] =
	"usage: moatctl explain [--config DIR] --from <spiffe://TD/ns/NS/sa/SA | plaintext>\n"
	"                       [--src-ip IP] --to IP:PORT [-o json]\n"
	"  --to a Service VIP:PORT explains every endpoint of that port and which are eligible\n"
	"  for the weighted choice (exit 0 when at least one is, 1 when none is)\n";

static void print_findings(const struct mc_findings *f, FILE *out)
{
	char buf[2048];
	for (size_t i = 0; i < f->n; i++)
		fprintf(out, "%s\n", mc_finding_str(&f->items[i], buf, sizeof(buf)));
}

static void print_summary(const struct mc_findings *f, FILE *out)
{
	size_t e = mc_findings_count(f, MC_ERROR), w = mc_findings_count(f, MC_WARNING),
	       n = mc_findings_count(f, MC_NOTE);
	fprintf(out, "%zu error%s, %zu warning%s, %zu note%s\n", e, e == 1 ? "" : "s", w,
		w == 1 ? "" : "s", n, n == 1 ? "" : "s");
}

static int explain_offline(const char *dir, const char *from, const char *src_ip, const char *to,
			   bool json)
{
	struct mesh_config *c = NULL;
	struct mc_findings f = {0};
	if (mesh_config_load_dir(dir, &c, &f) != 0) {
		fprintf(stderr, "moatctl explain: configuration %s is not valid:\n", dir);
		print_findings(&f, stderr);
		mc_findings_free(&f);
		return 2;
	}
	mc_findings_free(&f);
	struct sbuf out;
	sbuf_init(&out);
	/* A service VIP:port first (offline there are no enrolled pods: WorkloadEntries only). */
	struct svc_table *t = svc_table_build(c, NULL, 0, NULL, NULL);
	int rc = svc_explain(c, t, NULL, from, src_ip, to, json, &out);
	svc_table_unref(t);
	if (rc < 0)
		rc = authz_explain(c, from, src_ip, to, json, &out);
	if (rc == 2)
		fprintf(stderr, "moatctl explain: %s", out.s ? out.s : "bad input\n");
	else
		fputs(out.s ? out.s : "", stdout);
	sbuf_free(&out);
	mesh_config_unref(c);
	return rc;
}

static int explain_live(const char *from, const char *src_ip, const char *to, bool json)
{
	struct ctl_arg args[] = {
		{"from", from},
		{"src_ip", src_ip ? src_ip : ""},
		{"to", to},
		{"output", json ? "json" : "text"},
	};
	struct err e;
	int status = 2;
	char *body = NULL;
	if (ctl_call(moatctl_socket(), "explain", args, (int)ARRAY_SIZE(args), -1, &status, &body,
		     &e) != 0) {
		fprintf(stderr, "moatctl explain: %s (or pass --config DIR to explain offline)\n",
			e.msg);
		return 2;
	}
	if (status == 2)
		fprintf(stderr, "moatctl explain: %s", body ? body : "bad input\n");
	else
		fputs(body ? body : "", stdout);
	free(body);
	return status;
}

int cmd_explain(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'}, {"from", required_argument, NULL, 'f'},
		{"src-ip", required_argument, NULL, 's'}, {"to", required_argument, NULL, 't'},
		{"output", required_argument, NULL, 'o'}, {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *from = NULL, *src_ip = NULL, *to = NULL;
	bool json = false;
	int ch;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:f:s:t:o:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'c': dir = optarg; break;
		case 'f': from = optarg; break;
		case 's': src_ip = optarg; break;
		case 't': to = optarg; break;
		case 'o':
			if (strcmp(optarg, "json") != 0 && strcmp(optarg, "text") != 0) {
				fprintf(stderr, "moatctl explain: -o %s: expected json or text\n",
					optarg);
				return 2;
			}
			json = strcmp(optarg, "json") == 0;
			break;
		case 'h': fputs(explain_usage, stdout); return 0;
		default: fputs(explain_usage, stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "moatctl explain: unexpected argument %s\n%s", argv[optind],
			explain_usage);
		return 2;
	}
	if (!from || !to) {
		fprintf(stderr, "moatctl explain: --from and --to are required\n%s", explain_usage);
		return 2;
	}
	return dir ? explain_offline(dir, from, src_ip, to, json)
		   : explain_live(from, src_ip, to, json);
}

/* `moatctl lint DIR`; DIR may also be one YAML file, or "-" for standard input. */
static int lint_load(const char *what, struct mesh_config **c, struct mc_findings *f)
{
	struct stat st;
	if (strcmp(what, "-") != 0 && (stat(what, &st) != 0 || S_ISDIR(st.st_mode)))
		return mesh_config_load_dir(what, c, f);
	struct err e;
	size_t len = 0;
	/* one byte over the bound is enough for the loader to refuse it */
	char *text = read_file_max(strcmp(what, "-") == 0 ? "/dev/stdin" : what,
				   MC_MAX_FILE_BYTES + 1, &len, &e);
	if (!text) {
		mc_finding_add(f, MC_ERROR, what, 0, NULL, NULL, 0, NULL, "cannot read: %s", e.msg);
		return -1;
	}
	int rc = mesh_config_load_buffer(strcmp(what, "-") == 0 ? "<stdin>" : what, text, len, c, f);
	free(text);
	return rc;
}

int cmd_lint(int argc, char **argv)
{
	if (argc != 2 || argv[1][0] == '\0' ||
	    (argv[1][0] == '-' && argv[1][1] != '\0')) {
		if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
			puts("usage: moatctl lint DIR   (or one YAML file, or - for stdin)");
			return 0;
		}
		fputs("usage: moatctl lint DIR   (or one YAML file, or - for stdin)\n", stderr);
		return 2;
	}
	struct mesh_config *c = NULL;
	struct mc_findings f = {0};
	int rc = lint_load(argv[1], &c, &f);
	if (rc == 0)
		authz_lint_loaded(c, &f);
	if (rc == 0) /* Services: selectors and targetPort names against the WorkloadEntries */
		svc_table_unref(svc_table_build(c, NULL, 0, NULL, &f));
	print_findings(&f, stdout);
	print_summary(&f, stdout);
	mc_findings_free(&f);
	mesh_config_unref(c);
	return rc == 0 ? 0 : 1;
}
