/* Enrollment records: <state-dir>/pods/<ns>_<name>.pod, one per enrolled pod, so that an
 * agent that restarts (upgrade, crash) takes its pods back. Until it does, the links the
 * previous agent pinned keep every pod captured: connects are refused (nothing listens on
 * 15001) and STRICT drops stay — moat fails closed across restarts. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bpf/dataplane.h"
#include "core/log.h"
#include "core/netns.h"
#include "state/agent.h"
#include "state/tproxy.h"

static char *records_dir(const struct agent *a)
{
	return xasprintf("%s/pods", a->opts.state_dir);
}

static char *record_path(const struct agent *a, const char *fs_key)
{
	return xasprintf("%s/pods/%s.pod", a->opts.state_dir, fs_key);
}

static bool one_line(const char *s)
{
	return s && !strchr(s, '\n');
}

int pod_record_save(struct agent *a, const struct pod *p, const struct enroll_req *r,
		    struct err *e)
{
	char *dir = records_dir(a);
	int rc = mkdir_p(dir, 0700);
	free(dir);
	if (rc < 0)
		return err_set(e, "state dir %s/pods: %s", a->opts.state_dir, strerror(errno));
	struct sbuf b;
	sbuf_init(&b);
	sbuf_printf(&b, "namespace=%s\nname=%s\ncgroup=%s\ninterface=%s\nnetns_cookie=%llu\n",
		    p->ns, p->name, p->cgroup_path, p->ifname,
		    (unsigned long long)p->netns_cookie);
	if (one_line(r->netns_path))
		sbuf_printf(&b, "netns=%s\n", r->netns_path);
	if (one_line(r->sa))
		sbuf_printf(&b, "service_account=%s\n", r->sa);
	tproxy_was_record(&p->tproxy_was, &b);
	for (size_t i = 0; i < r->labels.n; i++)
		if (one_line(r->labels.items[i].key) && one_line(r->labels.items[i].value))
			sbuf_printf(&b, "label=%s=%s\n", r->labels.items[i].key,
				    r->labels.items[i].value);
	char *path = record_path(a, p->fs_key);
	rc = write_file_atomic(path, b.s, b.len, 0600, e);
	free(path);
	sbuf_free(&b);
	return rc;
}

void pod_record_delete(struct agent *a, const char *fs_key)
{
	char *path = record_path(a, fs_key);
	unlink(path);
	free(path);
}

struct record {
	char *ns, *name, *cgroup, *ifname, *netns, *sa;
	struct tproxy_was tproxy_was;
	unsigned long long cookie;
	struct mc_labels labels;
};

static void record_free(struct record *r)
{
	free(r->ns);
	free(r->name);
	free(r->cgroup);
	free(r->ifname);
	free(r->netns);
	free(r->sa);
	for (size_t i = 0; i < r->labels.n; i++) {
		free(r->labels.items[i].key);
		free(r->labels.items[i].value);
	}
	free(r->labels.items);
}

static int record_parse(char *text, struct record *r)
{
	memset(r, 0, sizeof(*r));
	tproxy_was_unknown(&r->tproxy_was);
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *eq = strchr(line, '=');
		if (!eq)
			return -1;
		*eq = 0;
		const char *k = line, *v = eq + 1;
		if (!strcmp(k, "namespace"))
			r->ns = xstrdup(v);
		else if (!strcmp(k, "name"))
			r->name = xstrdup(v);
		else if (!strcmp(k, "cgroup"))
			r->cgroup = xstrdup(v);
		else if (!strcmp(k, "interface"))
			r->ifname = xstrdup(v);
		else if (!strcmp(k, "netns"))
			r->netns = xstrdup(v);
		else if (!strcmp(k, "service_account"))
			r->sa = xstrdup(v);
		else if (tproxy_was_parse(&r->tproxy_was, k, v))
			continue; /* the pod's sysctls before moat */
		else if (!strcmp(k, "netns_cookie"))
			r->cookie = strtoull(v, NULL, 10);
		else if (!strcmp(k, "label") && strchr(v, '=')) {
			struct mc_label *l = VEC_PUSH(r->labels.items, r->labels.n, r->labels.cap);
			const char *veq = strchr(v, '=');
			l->key = xstrndup(v, (size_t)(veq - v));
			l->value = xstrdup(veq + 1);
		}
	}
	return r->ns && r->name && r->cgroup && r->ifname ? 0 : -1;
}

/* Take one recorded pod back; on failure its previous capture stays pinned (fail closed). */
static void restore_one(struct agent *a, const char *file)
{
	struct err e = {{0}};
	char *path = xasprintf("%s/pods/%s", a->opts.state_dir, file);
	char *text = read_file(path, NULL, &e);
	struct record r;
	if (!text || record_parse(text, &r) < 0) {
		log_error("enrollment record %s is unreadable (%s): its pod stays captured with "
			  "connections refused; remove the file and unenroll/enroll the pod",
			  path, text ? "malformed" : e.msg);
		free(text);
		free(path);
		return;
	}
	int fd = r.netns ? netns_open(r.netns, &e) : err_set(&e, "no netns path was recorded");
	uint64_t cookie = 0;
	if (fd >= 0 && (netns_cookie_of(fd, &cookie, &e) < 0 || cookie != r.cookie)) {
		if (!e.msg[0] || cookie != r.cookie)
			err_set(&e, "%s is now another network namespace", r.netns);
		close(fd);
		fd = -1;
	}
	if (fd >= 0) {
		struct enroll_req er = {.ns = r.ns, .name = r.name, .sa = r.sa,
					.cgroup_path = r.cgroup, .ifname = r.ifname, .netns_fd = fd,
					.netns_path = r.netns, .labels = r.labels,
					.tproxy_was = &r.tproxy_was};
		if (agent_enroll(a, &er, &e) == 0) {
			log_info("pod %s/%s taken back from the previous agent", r.ns, r.name);
		} else {
			if (er.netns_fd >= 0)
				close(er.netns_fd);
			fd = -1;
		}
	}
	if (fd < 0)
		log_error("pod %s/%s could not be taken back: %s. Its previous capture stays "
			  "(its connections are refused) until it is enrolled again or unenrolled",
			  r.ns, r.name, e.msg);
	record_free(&r);
	free(text);
	free(path);
}

void agent_restore_pods(struct agent *a)
{
	char *dir = records_dir(a);
	DIR *d = opendir(dir);
	free(dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name);
		if (n > 4 && strcmp(de->d_name + n - 4, ".pod") == 0)
			restore_one(a, de->d_name);
	}
	closedir(d);
}

int agent_forget_pod(struct agent *a, const char *ns, const char *name, struct err *e)
{
	char *fs_key = xasprintf("%s_%s", ns, name);
	char *path = record_path(a, fs_key);
	char *text = read_file(path, NULL, NULL);
	struct record r;
	int rc = -1;
	if (!text || record_parse(text, &r) < 0) {
		err_set(e, "pod %s/%s is not enrolled on this node", ns, name);
	} else {
		int fd = r.netns ? netns_open(r.netns, NULL) : -1;
		dataplane_detach_pod(a->dp, fs_key, fd, r.ifname);
		if (fd >= 0) {
			tproxy_teardown(fd, &r.tproxy_was);
			close(fd);
		}
		unlink(path);
		log_info("pod %s/%s: removed the capture left by a previous agent", ns, name);
		record_free(&r);
		rc = 0;
	}
	free(text);
	free(path);
	free(fs_key);
	return rc;
}

void agent_cleanup_all(struct agent *a)
{
	char *dir = records_dir(a);
	DIR *d = opendir(dir);
	if (d) {
		struct dirent *de;
		while ((de = readdir(d)) != NULL) {
			size_t n = strlen(de->d_name);
			if (n <= 4 || strcmp(de->d_name + n - 4, ".pod") != 0)
				continue;
			char *path = xasprintf("%s/%s", dir, de->d_name);
			char *text = read_file(path, NULL, NULL);
			struct record r;
			if (text && record_parse(text, &r) == 0) {
				agent_forget_pod(a, r.ns, r.name, NULL);
				record_free(&r);
			} else {
				unlink(path);
			}
			free(text);
			free(path);
		}
		closedir(d);
		rmdir(dir);
	}
	free(dir);
}
