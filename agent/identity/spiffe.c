/* SPIFFE IDs (strict: spiffe://<td>/ns/<ns>/sa/<sa>) and small text/time helpers shared by
 * the identity room. */
#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/err.h>

#include "identity/identity.h"
#include "identity/identity_internal.h"

static const char SCHEME[] = "spiffe://";

/* SPIFFE spec: trust domain names use lowercase letters, digits, '.', '-', '_'. */
static bool td_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
	       c == '_';
}

/* SPIFFE spec: path segments use letters, digits, '.', '-', '_' (no percent-encoding). */
static bool seg_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '-' || c == '_';
}

static int check_td_chars(const char *td, size_t n, struct err *e)
{
	if (n == 0)
		return err_set(e, "empty trust domain");
	if (n >= TRUST_DOMAIN_MAX)
		return err_set(e, "trust domain is %zu characters long (at most %d)", n,
			       TRUST_DOMAIN_MAX - 1);
	for (size_t i = 0; i < n; i++) {
		if (td[i] == '?' || td[i] == '#')
			return err_set(e, "query and fragment are not allowed");
		if (!td_char(td[i])) {
			char c = td[i];
			return err_set(e,
				       "trust domain has invalid character '%c' (allowed: a-z 0-9 . - _)",
				       c > 0x20 && c < 0x7f ? c : '?');
		}
	}
	return 0;
}

int trust_domain_check(const char *td, struct err *e)
{
	if (!td)
		return err_set(e, "empty trust domain");
	return check_td_chars(td, strlen(td), e);
}

/* One path segment: non-empty, allowed characters, not "." or "..". */
static int check_segment(const char *what, const char *s, size_t n, struct err *e)
{
	if (n == 0)
		return err_set(e, "empty %s", what);
	if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
		return err_set(e, "%s may not be \".\" or \"..\"", what);
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '?' || s[i] == '#')
			return err_set(e, "query and fragment are not allowed");
		if (!seg_char(s[i])) {
			char c = s[i];
			return err_set(e,
				       "%s has invalid character '%c' (allowed: A-Z a-z 0-9 . - _)",
				       what, c > 0x20 && c < 0x7f ? c : '?');
		}
	}
	return 0;
}

static int copy_out(char *dst, size_t dstlen, const char *src, size_t n, const char *what,
		    struct err *e)
{
	if (!dst)
		return 0;
	if (n >= dstlen)
		return err_set(e, "%s is too long (%zu characters)", what, n);
	memcpy(dst, src, n);
	dst[n] = 0;
	return 0;
}

/* Split "/ns/<ns>/sa/<sa>" into its two values; anything else is an error. */
static int split_path(const char *path, const char **ns, size_t *nsn, const char **sa,
		      size_t *san, struct err *e)
{
	static const char shape[] = "path must be /ns/<namespace>/sa/<service-account>";
	if (strncmp(path, "/ns/", 4) != 0)
		return err_set(e, "%s", shape);
	*ns = path + 4;
	const char *slash = strchr(*ns, '/');
	if (!slash)
		return err_set(e, "%s", shape);
	*nsn = (size_t)(slash - *ns);
	if (strncmp(slash, "/sa/", 4) != 0)
		return err_set(e, "%s", shape);
	*sa = slash + 4;
	*san = strlen(*sa);
	if (memchr(*sa, '/', *san))
		return err_set(e, "%s", shape);
	return 0;
}

int spiffe_id_check(const char *id, char *td, size_t tdlen, char *ns, size_t nslen, char *sa,
		    size_t salen, struct err *e)
{
	if (!id || !*id)
		return err_set(e, "empty SPIFFE ID");
	size_t len = strlen(id);
	if (len > SPIFFE_URI_MAX)
		return err_set(e, "SPIFFE ID is %zu bytes long (at most %d)", len, SPIFFE_URI_MAX);
	if (strncmp(id, SCHEME, sizeof(SCHEME) - 1) != 0) {
		if (strncasecmp(id, SCHEME, sizeof(SCHEME) - 1) == 0)
			return err_set(e, "scheme must be lowercase \"spiffe://\"");
		return err_set(e, "scheme must be \"spiffe://\"");
	}
	const char *tds = id + sizeof(SCHEME) - 1;
	const char *path = tds + strcspn(tds, "/");
	size_t tdn = (size_t)(path - tds);
	if (check_td_chars(tds, tdn, e) < 0)
		return -1;
	if (!*path)
		return err_set(e, "no path: expected /ns/<namespace>/sa/<service-account>");
	if (strpbrk(path, "?#"))
		return err_set(e, "query and fragment are not allowed");
	const char *nss = NULL, *sas = NULL;
	size_t nsn = 0, san = 0;
	if (split_path(path, &nss, &nsn, &sas, &san, e) < 0)
		return -1;
	if (check_segment("namespace", nss, nsn, e) < 0 ||
	    check_segment("service account", sas, san, e) < 0)
		return -1;
	if (copy_out(td, tdlen, tds, tdn, "trust domain", e) < 0 ||
	    copy_out(ns, nslen, nss, nsn, "namespace", e) < 0 ||
	    copy_out(sa, salen, sas, san, "service account", e) < 0)
		return -1;
	return 0;
}

bool spiffe_id_parse(const char *id, char *td, size_t tdlen, char *ns, size_t nslen, char *sa,
		     size_t salen)
{
	return spiffe_id_check(id, td, tdlen, ns, nslen, sa, salen, NULL) == 0;
}

const char *spiffe_principal(const char *id)
{
	if (id && strncmp(id, SCHEME, sizeof(SCHEME) - 1) == 0)
		return id + sizeof(SCHEME) - 1;
	return id;
}

/* ---- text and time helpers ---- */

const char *id_printable(const char *s, size_t n, char *buf, size_t buflen)
{
	if (buflen == 0)
		return buf;
	size_t o = 0, keep = buflen - 1;
	bool cut = n > keep;
	if (cut)
		keep = buflen > 4 ? buflen - 4 : 0;
	for (size_t i = 0; i < n && o < keep; i++) {
		unsigned char c = (unsigned char)s[i];
		buf[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	if (cut)
		for (int i = 0; i < 3 && o + 1 < buflen; i++)
			buf[o++] = '.';
	buf[o] = 0;
	return buf;
}

const char *id_time_rfc3339(time_t t, char *buf, size_t len)
{
	struct tm tm;
	if (!gmtime_r(&t, &tm) || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "@%lld", (long long)t);
	return buf;
}

bool id_asn1_time_to_time_t(const ASN1_TIME *t, time_t *out)
{
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
		return false;
	*out = timegm(&tm);
	return true;
}

const char *id_asn1_time_rfc3339(const ASN1_TIME *t, char *buf, size_t len)
{
	time_t v;
	if (!id_asn1_time_to_time_t(t, &v)) {
		snprintf(buf, len, "(unreadable time)");
		return buf;
	}
	return id_time_rfc3339(v, buf, len);
}

const char *id_ossl_errors(char *buf, size_t len)
{
	size_t o = 0;
	buf[0] = 0;
	unsigned long code;
	while ((code = ERR_get_error()) != 0) {
		char one[256];
		ERR_error_string_n(code, one, sizeof(one));
		/* The reason text ("certificate verify failed") is what users need; the packed
		 * "error:0A000086:SSL routines::..." form is the fallback. */
		const char *reason = ERR_reason_error_string(code);
		const char *text = reason ? reason : one;
		int w = snprintf(buf + o, len - o, "%s%s", o ? "; " : "", text);
		if (w < 0 || (size_t)w >= len - o)
			break;
		o += (size_t)w;
	}
	ERR_clear_error();
	if (!buf[0])
		snprintf(buf, len, "unknown OpenSSL error");
	return buf;
}

void id_serial_hex(const ASN1_INTEGER *serial, char *buf, size_t len)
{
	buf[0] = 0;
	BIGNUM *bn = ASN1_INTEGER_to_BN(serial, NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	snprintf(buf, len, "%s", hex ? hex : "?");
	OPENSSL_free(hex);
	BN_free(bn);
}
