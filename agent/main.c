/* moatd: the node agent. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bpf/dataplane.h"
#include "core/log.h"
#include "ctl/server.h"
#include "hbone/ktls.h"
#include "dns/dns.h"
#include "identity/identity.h"
#include "obs/access_log.h"
#include "obs/endpoints.h"
#include "obs/http.h"
#include "obs/metrics.h"
#include "proxy/engine.h"
#include "proxy/pool.h"
#include "proxy/proxy.h"
#include "state/agent.h"
#include "state/services.h"
#include "state/verdicts.h"
#include "state/wl_map.h"

static const char usage[] =
	"usage: moatd --config DIR [options]\n"
	"\n"
	"moat's node agent: captures the TCP connections of enrolled pods with BPF, authorizes\n"
	"them with Istio L4 AuthorizationPolicy semantics, and carries them over HBONE\n"
	"(HTTP/2 CONNECT over mutual TLS 1.3, port 15008).\n"
	"\n"
	"  --config DIR        configuration directory (YAML), watched: a file is reloaded when\n"
	"                      it is closed after writing or renamed in (docs/config.md)\n"
	"  --state-dir DIR     runtime state and control socket DIR/moatd.sock (/run/moat)\n"
	"  --bpf-dir DIR       where maps, programs and links are pinned (/sys/fs/bpf/moat)\n"
	"  --ca DIR            CA directory from `moatctl ca init` (default: a node-local\n"
	"                      ephemeral CA, enough for one node only)\n"
	"  --bundle FILE       trust bundle, reloaded when it changes (default DIR/root-cert.pem)\n"
	"  --svid-ttl SECONDS  workload certificate lifetime, renewed at half-life (86400)\n"
	"  --resolv-conf FILE  nameservers for ServiceEntry resolution: DNS (/etc/resolv.conf)\n"
	"  --access-log FILE   JSON access log and deny events (default: stdout), written by a\n"
	"                      thread: a slow sink never stalls the data plane\n"
	"  --access-log-buffer BYTES\n"
	"                      lines queued for a slow sink before new ones are dropped and\n"
	"                      counted in moat_access_log_dropped_total (4194304)\n"
	"  --log-level LEVEL   debug, info, warn, error (info)\n"
	"  --node NAME         node name shown by moatctl status\n"
	"  --pool-idle SECONDS release idle HBONE connections after this (300)\n"
	"HBONE deadlines (SECONDS may have decimals; 0 turns off any but the first) and caps:\n"
	"  --hbone-response-timeout SECONDS\n"
	"                      reset a CONNECT whose response has not come after this (10)\n"
	"  --hbone-suspect SECONDS\n"
	"                      a CONNECT waiting this long makes its pooled connection suspect:\n"
	"                      PING at once, no new streams on it until answered (2)\n"
	"  --stream-idle SECONDS\n"
	"                      reset established streams carrying no byte either way (0: never)\n"
	"  --inbound-idle SECONDS\n"
	"                      close accepted HBONE connections without streams (600)\n"
	"  --max-pending-per-destination N\n"
	"                      CONNECTs awaiting a response per destination address (256)\n"
	"  --max-pending-per-pod N\n"
	"                      CONNECTs awaiting a response per source pod (1024)\n"
	"  --pool-max-connections N\n"
	"                      pooled HBONE connections per pod and destination, 100 streams\n"
	"                      each (64); beyond the caps new connections are refused (RST)\n"
	"  --engine ENGINE     the kernel paths moatd may use, each falling back to user space\n"
	"                      per connection (logged and counted):\n"
	"                      auto (default): both below;\n"
	"                      sockmap: two pods of this node are joined in the kernel (no byte\n"
	"                      in user space); HBONE stays on OpenSSL;\n"
	"                      ktls: HBONE (both ends) on kernel TLS after the TLS 1.3\n"
	"                      handshake, when the kernel has it (see moatctl status), the app ->\n"
	"                      tunnel payload moved by splice() without entering user space\n"
	"                      (engine ktls-splice; ktls when no pipe can be had); same-node\n"
	"                      pairs go over HBONE;\n"
	"                      userspace: neither (for diagnosis)\n"
	"  --no-transparent    do not preserve client source addresses towards apps\n"
	"  --tls12             also accept TLS 1.2 on HBONE (TLS 1.3 only by default)\n"
	"  --metrics-port N    Prometheus metrics on :N/metrics (15020)\n"
	"  --metrics-addr IP   address the metrics port binds to (0.0.0.0; e.g. 127.0.0.1 or\n"
	"                      the node's internal address to keep it off other networks)\n"
	"  --admin-port N      admin on 127.0.0.1:N/config_dump (15000)\n"
	"  --ready-port N      readiness on :N/healthz/ready (15021)\n"
	"  --cleanup           remove every pod's capture, the pins under --bpf-dir and the\n"
	"                      enrollment records under --state-dir, then exit (no --config)\n"
	"  -h, --help          this text\n"
	"\n"
	"Signals: SIGTERM/SIGINT stop. Enrolled pods stay captured while no agent runs (their\n"
	"connects are refused: moat fails closed) and the next moatd with the same --state-dir\n"
	"and --bpf-dir takes them back. SIGHUP reloads the configuration.\n"
	"At start the soft open-files limit is raised to the hard limit.\n";

struct main_state {
	struct agent a;
	FILE *access;
};

static int parse_port(const char *s, uint16_t *out)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*end || v < 0 || v > 65535)
		return -1;
	*out = (uint16_t)v;
	return 0;
}

/* "2", "0.5": seconds to milliseconds. */
static int parse_seconds_ms(const char *s, int *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= 0 && v <= 86400))
		return -1;
	*out = (int)(v * 1000 + 0.5);
	return 0;
}

static int parse_count(const char *s, int *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 1 || v > 1000000)
		return -1;
	*out = (int)v;
	return 0;
}

static int parse_bytes(const char *s, size_t min, size_t max, size_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < min || v > max)
		return -1;
	*out = (size_t)v;
	return 0;
}

static int parse_args(int argc, char **argv, struct agent_opts *o)
{
	enum { O_STATE = 256, O_BPF, O_CA, O_BUNDLE, O_TTL, O_RESOLV, O_ACCESS, O_LEVEL, O_NODE,
	       O_IDLE, O_NOTP, O_TLS12, O_MPORT, O_APORT, O_RPORT, O_CLEANUP, O_MADDR, O_RESP,
	       O_SUSPECT, O_SIDLE, O_IIDLE, O_PDEST, O_PPOD, O_PCONNS, O_ENGINE, O_ALBUF };
	static const struct option opts[] = {
		{"config", required_argument, 0, 'c'},   {"state-dir", required_argument, 0, O_STATE},
		{"bpf-dir", required_argument, 0, O_BPF}, {"ca", required_argument, 0, O_CA},
		{"bundle", required_argument, 0, O_BUNDLE}, {"svid-ttl", required_argument, 0, O_TTL},
		{"resolv-conf", required_argument, 0, O_RESOLV},
		{"access-log", required_argument, 0, O_ACCESS},
		{"access-log-buffer", required_argument, 0, O_ALBUF},
		{"log-level", required_argument, 0, O_LEVEL}, {"node", required_argument, 0, O_NODE},
		{"pool-idle", required_argument, 0, O_IDLE}, {"no-transparent", no_argument, 0, O_NOTP},
		{"tls12", no_argument, 0, O_TLS12},     {"metrics-port", required_argument, 0, O_MPORT},
		{"admin-port", required_argument, 0, O_APORT},
		{"ready-port", required_argument, 0, O_RPORT}, {"help", no_argument, 0, 'h'},
		{"cleanup", no_argument, 0, O_CLEANUP}, {"engine", required_argument, 0, O_ENGINE},
		{"metrics-addr", required_argument, 0, O_MADDR},
		{"hbone-response-timeout", required_argument, 0, O_RESP},
		{"hbone-suspect", required_argument, 0, O_SUSPECT},
		{"stream-idle", required_argument, 0, O_SIDLE},
		{"inbound-idle", required_argument, 0, O_IIDLE},
		{"max-pending-per-destination", required_argument, 0, O_PDEST},
		{"max-pending-per-pod", required_argument, 0, O_PPOD},
		{"pool-max-connections", required_argument, 0, O_PCONNS},
		{0, 0, 0, 0},
	};
	*o = (struct agent_opts){
		.state_dir = "/run/moat",
		.bpf_dir = "/sys/fs/bpf/moat",
		.resolv_conf = "/etc/resolv.conf",
		.svid_ttl = 86400,
		.transparent = true,
		.engine = ENGINE_AUTO,
		.pool_idle_ms = 300000,
		.hbone_response_ms = 10000,
		.hbone_suspect_ms = 2000,
		.inbound_idle_ms = 600000,
		.max_pending_dest = 256,
		.max_pending_pod = 1024,
		.pool_max_conns = 64,
		.access_log_buffer = ACCESS_LOG_RING_DEFAULT,
		.metrics_port = 15020,
		.metrics_addr = "0.0.0.0",
		.admin_port = 15000,
		.ready_port = 15021,
	};
	static char log_level[16] = "info";
	int c, option_index = 0;
	while ((c = getopt_long(argc, argv, "c:h", opts, &option_index)) != -1) {
		switch (c) {
		case 'c': o->config_dir = optarg; break;
		case O_STATE: o->state_dir = optarg; break;
		case O_BPF: o->bpf_dir = optarg; break;
		case O_CA: o->ca_dir = optarg; break;
		case O_BUNDLE: o->bundle_path = optarg; break;
		case O_TTL:
			o->svid_ttl = atoi(optarg);
			if (o->svid_ttl < 10) {
				fprintf(stderr, "moatd: --svid-ttl %s: at least 10 seconds\n", optarg);
				return -1;
			}
			break;
		case O_RESOLV: o->resolv_conf = optarg; break;
		case O_ACCESS: o->access_log = optarg; break;
		case O_ALBUF:
			if (parse_bytes(optarg, ACCESS_LOG_RING_MIN, 1u << 30, &o->access_log_buffer) < 0) {
				fprintf(stderr, "moatd: --access-log-buffer %s: expected bytes, %u..%u\n",
					optarg, ACCESS_LOG_RING_MIN, 1u << 30);
				return -1;
			}
			break;
		case O_LEVEL: snprintf(log_level, sizeof(log_level), "%s", optarg); break;
		case O_NODE: o->node_name = optarg; break;
		case O_IDLE: o->pool_idle_ms = atoi(optarg) * 1000; break;
		case O_NOTP: o->transparent = false; break;
		case O_TLS12: o->allow_tls12 = true; break;
		case O_MPORT:
		case O_APORT:
		case O_RPORT: {
			uint16_t *dst = c == O_MPORT ? &o->metrics_port
				      : c == O_APORT ? &o->admin_port : &o->ready_port;
			if (parse_port(optarg, dst) < 0) {
				fprintf(stderr, "moatd: port \"%s\": expected 0..65535\n", optarg);
				return -1;
			}
			break;
		}
		case O_CLEANUP: o->cleanup = true; break;
		case O_ENGINE:
			if (strcmp(optarg, "userspace") == 0) {
				o->engine = ENGINE_USERSPACE;
			} else if (strcmp(optarg, "sockmap") == 0) {
				o->engine = ENGINE_SOCKMAP;
			} else if (strcmp(optarg, "ktls") == 0) {
				o->engine = ENGINE_KTLS;
			} else if (strcmp(optarg, "auto") == 0) {
				o->engine = ENGINE_AUTO;
			} else {
				fprintf(stderr, "moatd: --engine \"%s\": expected auto, sockmap, ktls or "
						"userspace\n",
					optarg);
				return -1;
			}
			break;
		case O_MADDR:
			if (!http_bind_addr_valid(optarg)) {
				fprintf(stderr, "moatd: --metrics-addr \"%s\": expected an IPv4 or IPv6 "
						"address\n", optarg);
				return -1;
			}
			o->metrics_addr = optarg;
			break;
		case O_RESP:
		case O_SUSPECT:
		case O_SIDLE:
		case O_IIDLE: {
			int *dst = c == O_RESP ? &o->hbone_response_ms
				 : c == O_SUSPECT ? &o->hbone_suspect_ms
				 : c == O_SIDLE ? &o->stream_idle_ms : &o->inbound_idle_ms;
			if (parse_seconds_ms(optarg, dst) < 0 || (c == O_RESP && *dst == 0)) {
				fprintf(stderr, "moatd: --%s %s: expected seconds, %s..86400\n",
					opts[option_index].name, optarg, c == O_RESP ? "0.001" : "0");
				return -1;
			}
			break;
		}
		case O_PDEST:
		case O_PPOD:
		case O_PCONNS: {
			int *dst = c == O_PDEST ? &o->max_pending_dest
				 : c == O_PPOD ? &o->max_pending_pod : &o->pool_max_conns;
			if (parse_count(optarg, dst) < 0) {
				fprintf(stderr, "moatd: --%s %s: expected a number 1..1000000\n",
					opts[option_index].name, optarg);
				return -1;
			}
			break;
		}
		case 'h': fputs(usage, stdout); exit(0);
		default: fputs(usage, stderr); return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "moatd: unexpected argument \"%s\"\n%s", argv[optind], usage);
		return -1;
	}
	if (!o->config_dir && !o->cleanup) {
		fprintf(stderr, "moatd: --config DIR is required\n%s", usage);
		return -1;
	}
	int ok;
	enum log_level lvl = log_level_parse(log_level, &ok);
	if (!ok) {
		fprintf(stderr, "moatd: --log-level %s: expected debug, info, warn or error\n", log_level);
		return -1;
	}
	log_setup("moatd", lvl, NULL);
	return 0;
}

/* ---- signals ---- */

static void on_signal(struct loop_io *io, uint32_t events)
{
	(void)events;
	struct agent *a = container_of(io, struct agent, signal_io);
	struct signalfd_siginfo si;
	while (read(a->signal_fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGHUP) {
			log_info("SIGHUP: reloading %s", a->opts.config_dir);
			agent_config_reload_async(a);
		} else {
			log_info("signal %d: shutting down", si.ssi_signo);
			loop_stop(a->loop);
		}
	}
}

static int setup_signals(struct agent *a, struct err *e)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	a->signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (a->signal_fd < 0)
		return err_set(e, "signalfd: %s", strerror(errno));
	loop_io_init(&a->signal_io);
	return loop_io_add(a->loop, &a->signal_io, a->signal_fd, EPOLLIN, on_signal);
}

/* ---- start and stop ---- */

/* Every proxied connection costs descriptors (app socket, tunnel, upstream): take the whole
 * hard limit rather than fail at a distribution's soft default of 1024. */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
		return;
	rlim_t was = rl.rlim_cur;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		log_warn("open files: cannot raise the soft limit %llu to the hard limit %llu: %s",
			 (unsigned long long)was, (unsigned long long)rl.rlim_max, strerror(errno));
	else
		log_info("open files: soft limit raised from %llu to the hard limit %llu",
			 (unsigned long long)was, (unsigned long long)rl.rlim_max);
}

static int load_initial_config(struct agent *a, struct err *e)
{
	struct mc_findings f = {0};
	a->load_cache = mc_load_cache_new(); /* the first change parses only what changed */
	if (mesh_config_load_dir_cached(a->opts.config_dir, a->load_cache, &a->cfg, &f) < 0) {
		agent_log_findings(&f, MC_WARNING);
		mc_findings_free(&f);
		return err_set(e, "configuration %s has errors (above): moatd will not start on it — "
				  "moat fails closed; fix the files, check them with `moatctl lint %s`",
			       a->opts.config_dir, a->opts.config_dir);
	}
	mc_findings_free(&f);
	authz_lint_loaded(a->cfg, NULL);
	agent_log_findings(&a->cfg->findings, MC_NOTE);
	a->reloads_ok = 1;
	return 0;
}

static int start_identity(struct agent *a, struct err *e)
{
	const char *td = a->cfg->mesh.trust_domain;
	if (a->opts.ca_dir) {
		a->ca = ca_load_dir(a->opts.ca_dir, e);
		if (!a->ca)
			return -1;
		if (strcmp(ca_trust_domain(a->ca), td) != 0)
			return err_set(e, "CA %s is for trust domain %s but the configuration's "
					  "MeshConfig says %s",
				       a->opts.ca_dir, ca_trust_domain(a->ca), td);
	} else {
		log_warn("no --ca given: using a node-local ephemeral CA for trust domain %s; agents "
			 "on other nodes will not trust it (run `moatctl ca init` and pass --ca)",
			 td);
		a->ca = ca_new_ephemeral(td, e);
		if (!a->ca)
			return -1;
	}
	struct identity_store_opts io = {
		.ca = a->ca,
		.bundle_path = a->opts.bundle_path ? a->opts.bundle_path : ca_bundle_path(a->ca),
		.ttl_seconds = a->opts.svid_ttl,
		.allow_tls12 = a->opts.allow_tls12,
	};
	a->ids = identity_store_new(a->loop, &io, e);
	return a->ids ? 0 : -1;
}

/* ---- node ports (obs/endpoints.c serves them; these wire the agent in) ---- */

static bool agent_is_ready(void *arg)
{
	return ((struct agent *)arg)->ready;
}

static void agent_scrape(void *arg, struct metrics *m)
{
	(void)m; /* the same registry as a->metrics */
	proxy_export_gauges(arg);
}

static void agent_dump(void *arg, struct sbuf *out)
{
	agent_config_dump(arg, out);
}

static int start_http(struct agent *a, struct err *e)
{
	struct obs_sources src = {
		.arg = a,
		.metrics = a->metrics,
		.accept_pauses = &a->accept_pauses,
		.access_log = a->access_log,
		.ready = agent_is_ready,
		.scrape = agent_scrape,
		.config_dump = agent_dump,
	};
	struct obs_ports ports = {.metrics_addr = a->opts.metrics_addr,
				  .metrics = a->opts.metrics_port,
				  .admin = a->opts.admin_port,
				  .ready = a->opts.ready_port};
	a->endpoints = obs_endpoints_start(a->loop, &src, &ports, e);
	return a->endpoints ? 0 : -1;
}

static int agent_start(struct agent *a, struct err *e)
{
	raise_fd_limit();
	/* Privileges and BPF first: nothing else matters without them. */
	if (dataplane_probe(a->opts.bpf_dir, e) < 0)
		return -1;
	if (mkdir_p(a->opts.state_dir, 0700) < 0)
		return err_set(e, "state dir %s: %s", a->opts.state_dir, strerror(errno));
	if (load_initial_config(a, e) < 0)
		return -1;
	if (start_identity(a, e) < 0)
		return -1;
	a->dp = dataplane_open(a->opts.bpf_dir, e);
	if (!a->dp)
		return -1;
	a->metrics = metrics_new();
	obs_describe_metrics(a->metrics);
	a->ktls = ktls_probe(a->ktls_why, sizeof(a->ktls_why));
	log_info("kernel TLS: %s; HBONE relay engine: %s (--engine %s)", a->ktls_why,
		 engine_uses_ktls(a) ? "kTLS, OpenSSL when a connection cannot switch"
				     : "OpenSSL in user space",
		 engine_name(a->opts.engine));
	struct metric_labels none = {0};
	metrics_gauge_set(a->metrics, "moat_ktls_available", &none, a->ktls ? 1 : 0);
	if (start_http(a, e) < 0)
		return -1;
	struct err de = {{0}};
	a->dns = dns_resolver_new(a->loop, a->opts.resolv_conf, &de);
	if (!a->dns)
		log_warn("ServiceEntry DNS resolution disabled: %s", de.msg);
	a->pool = hbone_pool_new(a);
	a->proxy = proxy_new(a);
	if (agent_config_watch(a, e) < 0 || agent_events_start(a, e) < 0)
		return -1;
	agent_egress_refresh(a);
	agent_sync_dataplane(a);
	agent_restore_pods(a);
	char *sock = xasprintf("%s/moatd.sock", a->opts.state_dir);
	a->ctl = ctl_server_new(a, sock, e);
	free(sock);
	if (!a->ctl)
		return -1;
	return setup_signals(a, e);
}

static void agent_stop(struct agent *a)
{
	a->ready = false;
	agent_config_watch_stop(a); /* first: a running load is waited for and dropped */
	ctl_server_free(a->ctl);
	/* Pods stay captured (pinned links): until an agent takes them back, their connects
	 * are refused rather than let through. `moatd --cleanup` or unenroll removes capture. */
	if (a->dp)
		agent_release_pods(a);
	if (a->pool)
		hbone_pool_free(a->pool);
	proxy_free(a);
	agent_egress_free(a);
	if (a->dns)
		dns_resolver_free(a->dns);
	if (a->dp)
		dataplane_release(a->dp);
	obs_endpoints_free(a->endpoints);
	if (a->ids)
		identity_store_free(a->ids);
	if (a->ca)
		ca_free(a->ca);
	if (a->metrics)
		metrics_free(a->metrics);
	svc_table_unref(a->svcs);
	agent_svc_state_free(a);
	if (a->cfg)
		mesh_config_unref(a->cfg);
	mc_load_cache_free(a->load_cache);
	wl_map_free(a->wl_map);
	if (a->signal_fd > 0)
		close(a->signal_fd);
	verdicts_free(a->verdicts);
	intern_free(&a->workload_ids);
	intern_free(&a->identity_ids);
	intern_free(&a->policy_ids);
	intern_free(&a->strings);
	loop_free(a->loop);
}

/* moatd --cleanup: what an uninstall needs after the last agent stopped. */
static int cleanup(struct agent *a)
{
	struct err e = {{0}};
	if (dataplane_probe(a->opts.bpf_dir, &e) < 0) {
		log_error("%s", e.msg);
		return 1;
	}
	a->dp = dataplane_open(a->opts.bpf_dir, &e);
	if (!a->dp) {
		log_error("%s", e.msg);
		return 1;
	}
	agent_cleanup_all(a);
	dataplane_close(a->dp); /* unpins everything left, links included */
	char *sock = xasprintf("%s/moatd.sock", a->opts.state_dir);
	unlink(sock);
	free(sock);
	log_info("cleaned up %s and %s", a->opts.bpf_dir, a->opts.state_dir);
	return 0;
}

/* JSON lines go through the writer thread (obs/access_log.c) to --access-log or stdout. */
static int open_access_log(struct main_state *st)
{
	struct agent *a = &st->a;
	if (a->opts.access_log) {
		st->access = fopen(a->opts.access_log, "ae");
		if (!st->access) {
			fprintf(stderr, "moatd: --access-log %s: %s\n", a->opts.access_log, strerror(errno));
			return -1;
		}
		log_set_access(st->access);
	}
	struct err e = {{0}};
	a->access_log = access_log_open(st->access ? fileno(st->access) : STDOUT_FILENO,
					a->opts.access_log_buffer,
					a->opts.access_log ? a->opts.access_log : "stdout", &e);
	if (!a->access_log) {
		fprintf(stderr, "moatd: %s\n", e.msg);
		return -1;
	}
	log_set_json_sink(access_log_sink, a->access_log);
	return 0;
}

/* Drain what is queued (bounded: ACCESS_LOG_DRAIN_MS), then close the sink. */
static void close_access_log(struct main_state *st)
{
	log_set_json_sink(NULL, NULL);
	uint64_t left = access_log_close(st->a.access_log, ACCESS_LOG_DRAIN_MS);
	st->a.access_log = NULL;
	if (st->access && !left) /* else a writer may still hold it; the process is ending */
		fclose(st->access);
}

int main(int argc, char **argv)
{
	static struct main_state st;
	struct agent *a = &st.a;
	if (parse_args(argc, argv, &a->opts) < 0)
		return 2;
	if (a->opts.cleanup)
		return cleanup(a);
	if (open_access_log(&st) < 0)
		return 2;
	a->loop = loop_new();
	if (!a->loop) {
		fprintf(stderr, "moatd: epoll: %s\n", strerror(errno));
		return 1;
	}
	struct err e = {{0}};
	if (agent_start(a, &e) < 0) {
		log_error("%s", e.msg);
		agent_stop(a);
		close_access_log(&st);
		return 1;
	}
	a->ready = true;
	log_info("ready: config %s, bpf %s, control socket %s/moatd.sock", a->opts.config_dir,
		 a->opts.bpf_dir, a->opts.state_dir);
	int rc = loop_run(a->loop);
	agent_stop(a);
	close_access_log(&st); /* after agent_stop: the records of connections it closed too */
	log_info("stopped");
	return rc == 0 ? 0 : 1;
}
