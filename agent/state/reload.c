/* The configuration directory is watched with inotify; a change is loaded whole, validated,
 * and swapped in atomically. A configuration with any error is refused as a whole: the
 * last good one stays in force and every error is logged with file and line.
 *
 * Loading runs on a worker thread: parsing, validating, indexing and linting 10,000 policies
 * takes seconds, and the loop thread carries every proxied byte. The worker owns one job
 * (the directory name in, a fresh snapshot and its findings out) and touches nothing else of
 * the agent; it hands the job back through an eventfd. The loop thread then only swaps the
 * snapshot pointer and syncs the maps (config_swap). Requests that arrive while a load runs
 * coalesce into one more load when it ends. The worker also writes the load's findings to the
 * log (log_msg is thread-safe), so a big configuration's notes cost the loop nothing.
 *
 * Reload triggers: a file closed after writing (IN_CLOSE_WRITE) or renamed into the
 * directory (IN_MOVED_TO: the atomic-rename convention, and how a ConfigMap volume swaps its
 * `..data` link), removals, and links created in place; not IN_CREATE or IN_MODIFY, so a file
 * still being written is never read half-written by its own events. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "state/agent.h"
#include "state/proxy_ops.h"

/* Several files changed together (a `kubectl cp`, a git checkout) make one load. */
#define RELOAD_DEBOUNCE_MS 150
/* The worker's nice value (the loop thread keeps the process's). */
#define RELOAD_WORKER_NICE 10

/* One load, handed between the threads: the worker writes it, then signals the eventfd;
 * the loop reads it only after that (eventfd write/read order the memory). */
struct reload_job {
	char *dir;                    /* in: a private copy */
	struct mc_load_cache *cache;  /* in: the agent's, the job's alone while it runs */
	int done_fd;                  /* in: the eventfd to signal when done */
	char old_digest[65];          /* in: the configuration in force when the job started */
	struct mesh_config *cfg;      /* out: the new snapshot, or NULL */
	struct mc_findings findings;  /* out: every finding (errors when cfg is NULL) */
	uint64_t ms;                  /* out: how long the load took */
	bool nice_failed;             /* out: the worker ran at the loop's priority */
};

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

/* A refused load (its findings were logged by the load): keep the configuration in force. */
static void config_refused(struct agent *a, struct mc_findings *f)
{
	size_t n = mc_findings_count(f, MC_ERROR);
	char first[1024] = "";
	for (size_t i = 0; i < f->n; i++)
		if (f->items[i].severity == MC_ERROR) {
			mc_finding_str(&f->items[i], first, sizeof(first));
			break;
		}
	snprintf(a->last_reload_error, sizeof(a->last_reload_error), "%s", first);
	log_error("configuration %s refused (%zu error%s): the previous configuration (digest "
		  "%.12s) stays in force",
		  a->opts.config_dir, n, n == 1 ? "" : "s", a->cfg ? a->cfg->digest : "none");
	a->reloads_failed++;
}

/* The swap point: the only place a new snapshot enters the agent. Everything that points
 * into the configuration is re-pointed and the maps follow, all on the loop thread, so no
 * connection ever sees half of a change. Takes the reference to cfg. */
static void config_swap(struct agent *a, struct mesh_config *cfg)
{
	a->last_reload_error[0] = 0;
	if (a->cfg && strcmp(a->cfg->digest, cfg->digest) == 0) {
		mesh_config_unref(cfg);
		return;
	}
	struct mesh_config *old = a->cfg;
	a->cfg = cfg;
	repoint_pods(a);
	agent_egress_refresh(a);
	agent_sync_dataplane(a);
	proxy_policy_changed(a);
	a->reloads_ok++;
	log_info("configuration loaded from %s: %zu workloads, %zu services, %zu authorization "
		 "policies, %zu peer authentications (digest %.12s)",
		 a->opts.config_dir, cfg->n_workloads, cfg->n_services, cfg->n_policies,
		 cfg->n_peer_auths, cfg->digest);
	if (old)
		mesh_config_unref(old);
}

/* On the worker thread. The findings are logged here too: 10,000 notes written one line at
 * a time took the loop thread most of a second. An unchanged configuration logs nothing. */
static void job_run(struct reload_job *j)
{
	uint64_t t0 = now_ms();
	mesh_config_load_dir_cached(j->dir, j->cache, &j->cfg, &j->findings);
	bool changed = j->cfg && strcmp(j->cfg->digest, j->old_digest) != 0;
	if (changed) /* an unchanged one is dropped: nothing to lint or log */
		authz_lint_loaded(j->cfg, &j->findings);
	j->ms = now_ms() - t0;
	if (!j->cfg)
		agent_log_findings(&j->findings, MC_WARNING);
	else if (changed)
		agent_log_findings(&j->cfg->findings, MC_NOTE);
}

/* Apply a finished job on the loop thread and free it. Returns 0 / -1 (refused). */
static int job_apply(struct agent *a, struct reload_job *j)
{
	int rc = 0;
	if (!j->cfg) {
		config_refused(a, &j->findings);
		rc = -1;
	} else {
		const struct mc_load_cache_stats *cs = mc_load_cache_stats(j->cache);
		log_debug("configuration %s read in %llu ms (%zu files parsed, %zu unchanged)%s",
			  j->dir, (unsigned long long)j->ms, cs->parsed, cs->reused,
			  j->nice_failed ? " (worker priority not lowered)" : "");
		config_swap(a, j->cfg);
	}
	mc_findings_free(&j->findings);
	free(j->dir);
	free(j);
	return rc;
}

static struct reload_job *job_new(struct agent *a)
{
	struct reload_job *j = xcalloc(1, sizeof(*j));
	j->dir = xstrdup(a->opts.config_dir);
	if (!a->load_cache)
		a->load_cache = mc_load_cache_new();
	j->cache = a->load_cache;
	snprintf(j->old_digest, sizeof(j->old_digest), "%s", a->cfg ? a->cfg->digest : "");
	return j;
}

static void job_free(struct reload_job *j)
{
	if (!j)
		return;
	mesh_config_unref(j->cfg);
	mc_findings_free(&j->findings);
	free(j->dir);
	free(j);
}

/* Wait for a running load and drop its result (it read the directory earlier than whoever
 * asks now: applying it later would bring back an older state). */
static void worker_discard(struct agent *a)
{
	if (a->reload_running) {
		pthread_join(a->reload_thread, NULL);
		uint64_t n;
		if (read(a->reload_efd, &n, sizeof(n)) < 0 && errno != EAGAIN)
			log_debug("reload eventfd: %s", strerror(errno));
		a->reload_running = false;
	}
	job_free(a->reload_job);
	a->reload_job = NULL;
}

int agent_config_reload(struct agent *a)
{
	worker_discard(a);
	a->reload_pending = false;
	struct reload_job *j = job_new(a);
	job_run(j);
	return job_apply(a, j);
}

/* The worker sees its job and nothing else of the agent. */
static void *worker_main(void *arg)
{
	struct reload_job *j = arg;
	/* Background work: on a busy node the loop thread (the data plane) goes first. Linux
	 * applies nice per thread; failing to lower it only costs latency. */
	if (setpriority(PRIO_PROCESS, (id_t)gettid(), RELOAD_WORKER_NICE) < 0)
		j->nice_failed = true;
	job_run(j);
	uint64_t one = 1;
	/* An eventfd write only fails on counter overflow (2^64 - 1 loads): cannot happen. */
	if (write(j->done_fd, &one, sizeof(one)) != sizeof(one))
		abort();
	return NULL;
}

void agent_config_reload_async(struct agent *a)
{
	if (a->reload_running) {
		if (!a->reload_pending)
			log_debug("configuration %s changed during a load: one more load after it",
				  a->opts.config_dir);
		else
			log_debug("configuration %s changed again during a load: shares the load "
				  "already queued",
				  a->opts.config_dir);
		a->reload_pending = true; /* coalesce: one more load when this one ends */
		return;
	}
	a->reload_pending = false;
	a->reload_job = job_new(a);
	a->reload_job->done_fd = a->reload_efd;
	log_debug("configuration %s: load started on the worker thread", a->opts.config_dir);
	int err = a->watching && a->reload_efd >= 0
			  ? pthread_create(&a->reload_thread, NULL, worker_main, a->reload_job)
			  : ENOSYS;
	if (err) {
		log_warn("configuration reload: no worker thread (%s): loading on the loop thread",
			 strerror(err));
		struct reload_job *j = a->reload_job;
		a->reload_job = NULL;
		job_run(j);
		job_apply(a, j);
		return;
	}
	a->reload_running = true;
}

static void on_reload_done(struct loop_io *io, uint32_t events)
{
	(void)events;
	struct agent *a = container_of(io, struct agent, reload_io);
	uint64_t n;
	if (read(a->reload_efd, &n, sizeof(n)) != sizeof(n) || !a->reload_running)
		return;
	pthread_join(a->reload_thread, NULL);
	struct reload_job *j = a->reload_job;
	a->reload_job = NULL;
	a->reload_running = false;
	job_apply(a, j);
	if (a->reload_pending)
		agent_config_reload_async(a);
}

static void reload_timer(struct loop_timer *t)
{
	struct agent *a = container_of(t, struct agent, reload_timer);
	agent_config_reload_async(a);
}

/* A name of the directory appeared as a link (ln -s, ln -sf): links give no IN_CLOSE_WRITE. */
static bool created_link(struct agent *a, const struct inotify_event *ev)
{
	if (!ev->len)
		return false;
	char *path = xasprintf("%s/%s", a->opts.config_dir, ev->name);
	struct stat st;
	bool link = lstat(path, &st) == 0 && S_ISLNK(st.st_mode);
	free(path);
	return link;
}

static bool event_means_change(struct agent *a, const struct inotify_event *ev)
{
	if (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_DELETE_SELF |
			IN_MOVE_SELF | IN_Q_OVERFLOW))
		return true;
	return (ev->mask & IN_CREATE) && created_link(a, ev);
}

static void on_inotify(struct loop_io *io, uint32_t events)
{
	(void)events;
	struct agent *a = container_of(io, struct agent, inotify_io);
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool changed = false;
	for (int reads = 0; reads < 64; reads++) {
		ssize_t n = read(a->inotify_fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		/* Hidden names count too: Kubernetes' atomic writer swaps a `..data` link. A load
		 * that finds the same digest changes nothing. */
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			changed |= event_means_change(a, ev);
			p += sizeof(*ev) + ev->len;
		}
	}
	if (changed)
		loop_timer_arm(a->loop, &a->reload_timer, RELOAD_DEBOUNCE_MS);
}

int agent_config_watch(struct agent *a, struct err *e)
{
	loop_io_init(&a->reload_io);
	loop_io_init(&a->inotify_io);
	loop_timer_init(&a->reload_timer, reload_timer);
	a->inotify_fd = -1;
	a->watching = true;
	a->reload_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (a->reload_efd < 0)
		return err_set(e, "eventfd: %s", strerror(errno));
	if (loop_io_add(a->loop, &a->reload_io, a->reload_efd, EPOLLIN, on_reload_done) < 0)
		return err_set(e, "epoll: %s", strerror(errno));
	a->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (a->inotify_fd < 0)
		return err_set(e, "inotify: %s", strerror(errno));
	uint32_t mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE |
			IN_DELETE_SELF | IN_MOVE_SELF;
	if (inotify_add_watch(a->inotify_fd, a->opts.config_dir, mask) < 0)
		return err_set(e, "watch %s: %s", a->opts.config_dir, strerror(errno));
	if (loop_io_add(a->loop, &a->inotify_io, a->inotify_fd, EPOLLIN, on_inotify) < 0)
		return err_set(e, "epoll: %s", strerror(errno));
	return 0;
}

void agent_config_watch_stop(struct agent *a)
{
	if (!a->watching)
		return;
	worker_discard(a);
	loop_io_del(a->loop, &a->reload_io);
	loop_io_del(a->loop, &a->inotify_io);
	loop_timer_cancel(a->loop, &a->reload_timer);
	if (a->reload_efd >= 0)
		close(a->reload_efd);
	if (a->inotify_fd >= 0)
		close(a->inotify_fd);
	a->reload_efd = a->inotify_fd = -1;
	a->watching = false;
}
