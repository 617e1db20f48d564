/* moatctl ca: create the mesh's root CA directory (`moatctl ca init`). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "identity/identity.h"
#include "moatctl.h"

#define DEFAULT_TRUST_DOMAIN "cluster.local"

static void ca_usage(FILE *f)
{
	fprintf(f,
		"usage: moatctl ca init --out DIR [--trust-domain TD]\n"
		"       moatctl ca help\n"
		"\n"
		"init  create a new root CA (ECDSA P-256, self-signed, 10 years) in DIR:\n"
		"        root-cert.pem  (0644)  the root certificate: the trust bundle for every node\n"
		"        root-key.pem   (0600)  its private key: give it only to moatd (--ca DIR)\n"
		"        trust-domain   (0644)  the trust domain, e.g. cluster.local\n"
		"      DIR is created with mode 0700. An existing root-key.pem is never replaced.\n"
		"      --trust-domain TD   SPIFFE trust domain (default %s)\n"
		"      --out DIR           where to write the CA (required)\n",
		DEFAULT_TRUST_DOMAIN);
}

/* The new CA as a person wants to see it: where, what, until when, fingerprint. */
static void print_created(const char *dir, const struct moat_ca *ca)
{
	X509 *root = ca_root_cert(ca);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	X509_digest(root, EVP_sha256(), md, &mdlen);
	char fp[3 * EVP_MAX_MD_SIZE + 1] = "";
	for (unsigned int i = 0; i < mdlen; i++)
		snprintf(fp + 3 * i, sizeof(fp) - 3 * i, "%02X%s", md[i], i + 1 < mdlen ? ":" : "");
	char until[64] = "?";
	struct tm tm;
	if (ASN1_TIME_to_tm(X509_get0_notAfter(root), &tm) == 1)
		strftime(until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", &tm);
	printf("created CA for trust domain %s in %s\n", ca_trust_domain(ca), dir);
	printf("  %s/root-cert.pem  (0644) root certificate, valid until %s\n", dir, until);
	printf("  %s/root-key.pem   (0600) private key: keep it secret\n", dir);
	printf("  %s/trust-domain   (0644)\n", dir);
	printf("  SHA-256 fingerprint %s\n", fp);
	printf("inspect: openssl x509 -in %s/root-cert.pem -noout -text\n", dir);
}

static int ca_init(int argc, char **argv)
{
	static const struct option opts[] = {
		{"trust-domain", required_argument, NULL, 't'},
		{"out", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *td = DEFAULT_TRUST_DOMAIN, *out = NULL;
	int c;
	optind = 0; /* glibc: full re-initialisation, main may have used getopt already */
	while ((c = getopt_long(argc, argv, "t:o:h", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			td = optarg;
			break;
		case 'o':
			out = optarg;
			break;
		case 'h':
			ca_usage(stdout);
			return 0;
		default:
			ca_usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "moatctl ca init: unexpected argument \"%s\"\n", argv[optind]);
		return 2;
	}
	if (!out) {
		fprintf(stderr, "moatctl ca init: --out DIR is required (where to write the CA)\n");
		return 2;
	}
	struct err e = {{0}};
	if (ca_init_dir(out, td, &e) < 0) {
		fprintf(stderr, "moatctl ca init: %s\n", e.msg);
		return 2;
	}
	struct moat_ca *ca = ca_load_dir(out, &e);
	if (!ca) {
		fprintf(stderr, "moatctl ca init: wrote %s but cannot read it back: %s\n", out,
			e.msg);
		return 2;
	}
	print_created(out, ca);
	ca_free(ca);
	return 0;
}

int cmd_ca(int argc, char **argv)
{
	if (argc < 2) {
		ca_usage(stderr);
		return 2;
	}
	const char *sub = argv[1];
	if (!strcmp(sub, "help") || !strcmp(sub, "--help") || !strcmp(sub, "-h")) {
		ca_usage(stdout);
		return 0;
	}
	if (!strcmp(sub, "init"))
		return ca_init(argc - 1, argv + 1);
	fprintf(stderr, "moatctl ca: unknown subcommand \"%s\" (try: moatctl ca help)\n", sub);
	return 2;
}
