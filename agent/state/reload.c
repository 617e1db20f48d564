/* The configuration directory is watched with inotify; a change is loaded whole, validated,
 * and swapped in atomically. A configuration with any error is refused as a whole: the
 * last good one stays in force and every error is logged with file and line. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "core/log.h"
#include "proxy/proxy.h"
#include "state/agent.h"

/* Editors write in several steps: wait for the directory to settle. */
#define RELOAD_DEBOUNCE_MS 150

void agent_log_findings(const struct mc_findings *f, enum mc_severity min)
{
	char buf[2048];
	for (size_t i = 0; i < f->n; i++) {
		if (f->items[i].severity < min)
			continue;
		mc_finding_str(&f->items[i], buf, sizeof(buf));
		if (f->items[i].severity == MC_ERROR)
			log_error("%s", buf);
		else if (f->items[i].severity == MC_WARNING)
			log_warn("%s", buf);
		else
			log_info("%s", buf);
	}
}

/* The pod's addresses are fixed at enrollment (listeners, plain_listeners): an entry that now
 * lists others cannot describe it until it is enrolled again. */
static bool entry_addrs_match(const struct pod *p, const struct mc_workload *we)
{
	if (we->n_addrs != p->n_addrs)
		return false;
	for (size_t i = 0; i < we->n_addrs; i++)
		if (!pod_has_addr(p, &we->addrs[i]))
			return false;
	return true;
}

/* Pods point into the configuration: re-point them at the new one. */
static void repoint_pods(struct agent *a)
{
	for (struct pod *p = a->pods; p; p = p->next) {
		const struct mc_workload *we = mc_workload_by_name(a->cfg, p->ns, p->name);
		if (we && !entry_addrs_match(p, we)) {
			if (p->entry)
				log_warn("pod %s: its WorkloadEntry (%s:%d) now lists other addresses; "
					 "the pod keeps its enrolled addresses and facts until it is "
					 "enrolled again", p->key, we->meta.file, we->meta.line);
			p->entry = NULL;
			continue;
		}
		if (we && strcmp(we->service_account, p->synth.service_account) != 0) {
			log_warn("pod %s: its WorkloadEntry now says service account %s but the pod "
				 "runs as %s; keeping %s until it is enrolled again",
				 p->key, we->service_account, p->synth.service_account,
				 p->synth.service_account);
		}
		if (!we && p->entry)
			log_warn("pod %s: its WorkloadEntry left the configuration; keeping its last "
				 "known labels and service account", p->key);
		p->entry = we && strcmp(we->service_account, p->synth.service_account) == 0 ? we : NULL;
	}
}

int agent_config_reload(struct agent *a)
{
	struct mc_findings f = {0};
	struct mesh_config *cfg = NULL;
	if (mesh_config_load_dir(a->opts.config_dir, &cfg, &f) < 0) {
		agent_log_findings(&f, MC_WARNING);
		size_t n = mc_findings_count(&f, MC_ERROR);
		char first[1024] = "";
		for (size_t i = 0; i < f.n; i++)
			if (f.items[i].severity == MC_ERROR) {
				mc_finding_str(&f.items[i], first, sizeof(first));
				break;
			}
		snprintf(a->last_reload_error, sizeof(a->last_reload_error), "%s", first);
		log_error("configuration %s refused (%zu error%s): the previous configuration (digest "
			  "%.12s) stays in force",
			  a->opts.config_dir, n, n == 1 ? "" : "s", a->cfg ? a->cfg->digest : "none");
		mc_findings_free(&f);
		a->reloads_failed++;
		return -1;
	}
	mc_findings_free(&f);
	a->last_reload_error[0] = 0;
	if (a->cfg && strcmp(a->cfg->digest, cfg->digest) == 0) {
		mesh_config_unref(cfg);
		return 0;
	}
	agent_log_findings(&cfg->findings, MC_NOTE);
	struct mesh_config *old = a->cfg;
	a->cfg = cfg;
	repoint_pods(a);
	agent_egress_refresh(a);
	agent_sync_dataplane(a);
	inbound_recheck(a);
	a->reloads_ok++;
	log_info("configuration loaded from %s: %zu workloads, %zu services, %zu authorization "
		 "policies, %zu peer authentications (digest %.12s)",
		 a->opts.config_dir, cfg->n_workloads, cfg->n_services, cfg->n_policies,
		 cfg->n_peer_auths, cfg->digest);
	if (old)
		mesh_config_unref(old);
	return 0;
}

static void reload_timer(struct loop_timer *t)
{
	struct agent *a = container_of(t, struct agent, reload_timer);
	agent_config_reload(a);
}

static void on_inotify(struct loop_io *io, uint32_t events)
{
	(void)events;
	struct agent *a = container_of(io, struct agent, inotify_io);
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool changed = false;
	for (;;) {
		ssize_t n = read(a->inotify_fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		/* Any event counts, hidden names included: Kubernetes' atomic writer (ConfigMap
		 * volumes) swaps a `..data` link. Reloads are debounced and a reload that finds
		 * the same digest changes nothing. */
		if (n > 0)
			changed = true;
	}
	if (changed)
		loop_timer_arm(a->loop, &a->reload_timer, RELOAD_DEBOUNCE_MS);
}

int agent_config_watch(struct agent *a, struct err *e)
{
	a->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (a->inotify_fd < 0)
		return err_set(e, "inotify: %s", strerror(errno));
	uint32_t mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE |
			IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF;
	if (inotify_add_watch(a->inotify_fd, a->opts.config_dir, mask) < 0)
		return err_set(e, "watch %s: %s", a->opts.config_dir, strerror(errno));
	loop_io_init(&a->inotify_io);
	loop_timer_init(&a->reload_timer, reload_timer);
	if (loop_io_add(a->loop, &a->inotify_io, a->inotify_fd, EPOLLIN, on_inotify) < 0)
		return err_set(e, "epoll: %s", strerror(errno));
	return 0;
}
