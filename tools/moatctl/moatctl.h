/* moatctl: the user's tool. Each subcommand is `int cmd_X(int argc, char **argv)` with
 * argv[0] = the subcommand name, parsed with getopt_long; it returns the process exit code
 * (0 ok, 1 "no"/DENY/findings, 2 bad input or failure) and prints errors to stderr as
 * "moatctl X: what failed: why". */
#ifndef MOAT_MOATCTL_H
#define MOAT_MOATCTL_H

/* Control socket path: --socket before the subcommand, else $MOAT_SOCKET, else default. */
#define MOATCTL_DEFAULT_SOCKET "/run/moat/moatd.sock"
const char *moatctl_socket(void);

int cmd_ca(int argc, char **argv);       /* ca init --trust-domain TD --out DIR */
int cmd_explain(int argc, char **argv);  /* explain [--config DIR] --from ID|plaintext ... */
int cmd_lint(int argc, char **argv);     /* lint DIR */
int cmd_enroll(int argc, char **argv);
int cmd_unenroll(int argc, char **argv);
int cmd_show(int argc, char **argv);     /* status | workloads | verdicts | connections | certs */

#endif
