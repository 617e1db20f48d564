/* Request parsers that take untrusted bytes, on plain buffers (the same functions the fuzz
 * targets in tests/fuzz/ drive): the control-socket request line and the inbound HBONE
 * CONNECT checks. */
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"
#include "proxy/connect_req.h"
#include "test.h"

static int parse_line(const char *text, char *buf, size_t cap, char **verb,
		      struct ctl_arg *args, int max, int *n, const char **why)
{
	snprintf(buf, cap, "%s", text);
	return ctl_request_parse(buf, verb, args, max, n, why);
}

TEST(ctl_request_splits_verb_and_decoded_arguments)
{
	char buf[256], *verb = NULL;
	struct ctl_arg args[4];
	int n = -1;
	const char *why = NULL;
	CHECK_INT(parse_line("explain  from=spiffe%3A%2F%2Ftd%2Fns%2Fa%2Fsa%2Fb to=10.1.0.2:80 k=",
			     buf, sizeof(buf), &verb, args, 4, &n, &why), 0);
	CHECK_STR(verb, "explain");
	CHECK_INT(n, 3);
	CHECK_STR(args[0].key, "from");
	CHECK_STR(args[0].value, "spiffe://td/ns/a/sa/b");
	CHECK_STR(args[1].value, "10.1.0.2:80");
	CHECK_STR(args[2].key, "k");
	CHECK_STR(args[2].value, "");
}

TEST(ctl_request_refusals_say_why)
{
	char buf[256], *verb = NULL;
	struct ctl_arg args[2];
	int n;
	const char *why = NULL;
	CHECK_INT(parse_line("   ", buf, sizeof(buf), &verb, args, 2, &n, &why), -1);
	CHECK_STR(why, "empty request");
	CHECK_INT(parse_line("status json", buf, sizeof(buf), &verb, args, 2, &n, &why), -1);
	CHECK_STR(why, "malformed request");
	CHECK_INT(parse_line("status a=1 b=2 c=3", buf, sizeof(buf), &verb, args, 2, &n, &why), -1);
	CHECK_STR(why, "malformed request");
	CHECK_INT(parse_line("status a=%4", buf, sizeof(buf), &verb, args, 2, &n, &why), -1);
	CHECK_STR(why, "malformed escape in request");
	/* A NUL would silently cut the value ("/proc/1/ns/net%00x" would name /proc/1/ns/net). */
	CHECK_INT(parse_line("enroll netns=/x%00y", buf, sizeof(buf), &verb, args, 2, &n, &why), -1);
	CHECK_STR(why, "malformed escape in request");
}

static struct hbone_request req(const char *method, const char *authority, const char *fwd)
{
	struct hbone_request r = {.method = method, .authority = authority, .forwarded = fwd,
				  .peer_port = 40000, .local_port = 15008};
	addr_parse("10.1.0.2", &r.local_addr);
	addr_parse("10.1.0.1", &r.peer_addr);
	return r;
}

TEST(connect_accepted_only_for_the_dialed_pod)
{
	struct moat_addr dst;
	uint16_t port = 0;
	char why[256];
	struct hbone_request r = req("CONNECT", "10.1.0.2:8080", NULL);
	CHECK_INT(hbone_connect_check(&r, &r.local_addr, 1, &dst, &port, why, sizeof(why)), 0);
	CHECK(addr_eq(&dst, &r.local_addr));
	CHECK_INT(port, 8080);

	r = req("GET", "10.1.0.2:8080", NULL);
	CHECK_INT(hbone_connect_check(&r, &r.local_addr, 1, &dst, &port, why, sizeof(why)), 400);
	CHECK_STR(why, "method GET is not CONNECT");
	r = req("CONNECT", "web.shop:8080", NULL);
	CHECK_INT(hbone_connect_check(&r, &r.local_addr, 1, &dst, &port, why, sizeof(why)), 400);
	CHECK_STR(why, "authority \"web.shop:8080\" is not ip:port");
	r = req("CONNECT", "10.1.0.2: +8080", NULL); /* a port is digits only */
	CHECK_INT(hbone_connect_check(&r, &r.local_addr, 1, &dst, &port, why, sizeof(why)), 400);
	r = req("CONNECT", "10.1.0.2:8080 ", NULL);
	CHECK_INT(hbone_connect_check(&r, &r.local_addr, 1, &dst, &port, why, sizeof(why)), 400);
	r = req("CONNECT", "10.1.0.9:8080", NULL);
	CHECK_INT(hbone_connect_check(&r, &r.local_addr, 1, &dst, &port, why, sizeof(why)), 400);
	CHECK_STR(why, "authority 10.1.0.9:8080 is not the dialed pod 10.1.0.2");
	r = req("CONNECT", "10.1.0.2:15008", NULL);
	CHECK_INT(hbone_connect_check(&r, &r.local_addr, 1, &dst, &port, why, sizeof(why)), 400);
	CHECK_STR(why, "agent ports are not valid destinations");

	/* Dual stack: any address of the dialed pod names it, over either family's tunnel. */
	struct moat_addr both[2] = {r.local_addr};
	addr_parse("fd00:10:244:1::2", &both[1]);
	r = req("CONNECT", "[fd00:10:244:1::2]:8080", NULL);
	CHECK_INT(hbone_connect_check(&r, both, 2, &dst, &port, why, sizeof(why)), 0);
	CHECK(addr_eq(&dst, &both[1]));
	CHECK_INT(hbone_connect_check(&r, both, 1, &dst, &port, why, sizeof(why)), 400);
}

