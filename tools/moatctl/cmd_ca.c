/* moatctl ca: create the mesh's root CA (`ca init`) and issue certificates from it for
 * peers moatd does not run (`ca issue`). */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "identity/identity.h"
#include "moatctl.h"

#define DEFAULT_TRUST_DOMAIN "cluster.local"

static void ca_usage(FILE *f)
{
	fprintf(f,
		"usage: moatctl ca init --out DIR [--trust-domain TD]\n"
		"       moatctl ca issue --ca DIR --id SPIFFE-ID --out DIR [--ttl SECONDS]\n"
		"       moatctl ca help\n"
		"\n"
		"init  create a new root CA (ECDSA P-256, self-signed, 10 years) in DIR:\n"
		"        root-cert.pem  (0644)  the root certificate: the trust bundle for every node\n"
		"        root-key.pem   (0600)  its private key: give it only to moatd (--ca DIR)\n"
		"        trust-domain   (0644)  the trust domain, e.g. cluster.local\n"
		"      DIR is created with mode 0700. An existing root-key.pem is never replaced.\n"
		"      --trust-domain TD   SPIFFE trust domain (default %s)\n"
		"      --out DIR           where to write the CA (required)\n"
		"\n"
		"issue write an SVID for SPIFFE-ID signed by the CA in --ca DIR, for a workload moatd\n"
		"      does not run (an external HBONE peer, a test client): DIR/cert.pem (0644),\n"
		"      DIR/key.pem (0600), DIR/ca.pem (0644, the trust bundle). Same profile as the\n"
		"      SVIDs moatd mints; --ttl defaults to 86400.\n",
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

static int write_pem(const char *dir, const char *name, int mode, int (*fn)(BIO *, void *),
		     void *obj)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	BIO *b = BIO_new(BIO_s_mem());
	if (!b || !fn(b, obj)) {
		BIO_free(b);
		fprintf(stderr, "moatctl ca issue: cannot encode %s\n", name);
		return -1;
	}
	char *data;
	long len = BIO_get_mem_data(b, &data);
	struct err e = {{0}};
	int rc = write_file_atomic(path, data, (size_t)len, mode, &e);
	BIO_free(b);
	if (rc < 0)
		fprintf(stderr, "moatctl ca issue: %s\n", e.msg);
	return rc;
}

static int pem_cert(BIO *b, void *x)
{
	return PEM_write_bio_X509(b, x);
}

static int pem_key(BIO *b, void *k)
{
	return PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
}

static int ca_issue(int argc, char **argv)
{
	static const struct option opts[] = {
		{"ca", required_argument, NULL, 'c'}, {"id", required_argument, NULL, 'i'},
		{"out", required_argument, NULL, 'o'}, {"ttl", required_argument, NULL, 't'},
		{NULL, 0, NULL, 0},
	};
	const char *cadir = NULL, *id = NULL, *out = NULL;
	int ttl = 86400, c;
	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c': cadir = optarg; break;
		case 'i': id = optarg; break;
		case 'o': out = optarg; break;
		case 't': ttl = atoi(optarg); break;
		default: ca_usage(stderr); return 2;
		}
	}
	if (!cadir || !id || !out || ttl < 1) {
		fprintf(stderr, "moatctl ca issue: --ca DIR, --id SPIFFE-ID and --out DIR are required "
				"(--ttl > 0)\n");
		return 2;
	}
	struct err e = {{0}};
	struct moat_ca *ca = ca_load_dir(cadir, &e);
	if (!ca) {
		fprintf(stderr, "moatctl ca issue: %s\n", e.msg);
		return 2;
	}
	struct svid *s = ca_mint_svid(ca, id, ttl, &e);
	int rc = 2;
	if (!s) {
		fprintf(stderr, "moatctl ca issue: %s\n", e.msg);
	} else if (mkdir_p(out, 0700) < 0) {
		fprintf(stderr, "moatctl ca issue: create %s: %s\n", out, strerror(errno));
	} else if (write_pem(out, "cert.pem", 0644, pem_cert, s->cert) == 0 &&
		   write_pem(out, "key.pem", 0600, pem_key, s->key) == 0 &&
		   write_pem(out, "ca.pem", 0644, pem_cert, ca_root_cert(ca)) == 0) {
		printf("issued %s serial %s to %s/{cert,key,ca}.pem\n", s->spiffe_id, s->serial, out);
		rc = 0;
	}
	if (s)
		svid_unref(s);
	ca_free(ca);
	return rc;
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
	if (!strcmp(sub, "issue"))
		return ca_issue(argc - 1, argv + 1);
	fprintf(stderr, "moatctl ca: unknown subcommand \"%s\" (try: moatctl ca help)\n", sub);
	return 2;
}
