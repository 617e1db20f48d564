/* Can this process do BPF here? And the bpffs chores: mount, check, clear a pin tree. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bpf/internal.h"
#include "core/util.h"

bool dp_on_bpffs(const char *path)
{
	struct statfs st;
	return statfs(path, &st) == 0 && (unsigned long)st.f_type == BPF_FS_MAGIC_VALUE;
}

/* The deepest existing directory on the way to path ("/sys/fs/bpf/x/y" -> "/sys/fs/bpf"
 * when x does not exist yet). */
static void existing_ancestor(const char *path, char *out, size_t len)
{
	snprintf(out, len, "%s", path);
	struct stat st;
	while (stat(out, &st) != 0) {
		char *slash = strrchr(out, '/');
		if (!slash || slash == out) {
			snprintf(out, len, "/");
			return;
		}
		*slash = 0;
	}
}

int dp_ensure_bpffs(const char *pin_dir, struct err *e)
{
	if (!dp_on_bpffs(DP_DEFAULT_BPFFS)) {
		if (mkdir(DP_DEFAULT_BPFFS, 0755) < 0 && errno != EEXIST)
			return err_set(e, "bpffs: mkdir %s: %s", DP_DEFAULT_BPFFS, strerror(errno));
		if (mount("bpf", DP_DEFAULT_BPFFS, "bpf", 0, "mode=0700") < 0)
			return err_set(e,
				       "bpffs: %s is not a bpf filesystem and mounting one failed: %s "
				       "(run as root, or `mount -t bpf bpf %s`)",
				       DP_DEFAULT_BPFFS, strerror(errno), DP_DEFAULT_BPFFS);
	}
	char anc[4096];
	existing_ancestor(pin_dir, anc, sizeof(anc));
	if (!dp_on_bpffs(anc))
		return err_set(e,
			       "pin dir %s: %s is not on a bpf filesystem (choose a pin dir under "
			       "%s)",
			       pin_dir, anc, DP_DEFAULT_BPFFS);
	return 0;
}

/* Depth bound for the pin tree: <dir>/links/<pod>/<prog> is 3 levels; allow some slack. */
#define PIN_TREE_DEPTH 6

static int clear_tree_at(int dirfd, const char *shown, int depth, const char *keep,
			 struct err *e)
{
	if (depth > PIN_TREE_DEPTH)
		return err_set(e, "clear pins %s: deeper than %d levels, refusing", shown,
			       PIN_TREE_DEPTH);
	DIR *d = fdopendir(dirfd);
	if (!d) {
		close(dirfd);
		return err_set(e, "clear pins %s: %s", shown, strerror(errno));
	}
	int rc = 0;
	struct dirent *de;
	while (rc == 0 && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (depth == 0 && keep && strcmp(de->d_name, keep) == 0)
			continue;
		if (de->d_type == DT_DIR) {
			int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (sub < 0) {
				rc = err_set(e, "clear pins %s/%s: %s", shown, de->d_name,
					     strerror(errno));
				break;
			}
			char *sub_shown = xasprintf("%s/%s", shown, de->d_name);
			rc = clear_tree_at(sub, sub_shown, depth + 1, NULL, e);
			free(sub_shown);
			if (rc == 0 && unlinkat(dirfd, de->d_name, AT_REMOVEDIR) < 0)
				rc = err_set(e, "clear pins: rmdir %s/%s: %s", shown, de->d_name,
					     strerror(errno));
		} else if (unlinkat(dirfd, de->d_name, 0) < 0) {
			rc = err_set(e, "clear pins: unlink %s/%s: %s", shown, de->d_name,
				     strerror(errno));
		}
	}
	closedir(d); /* closes dirfd */
	return rc;
}

int dp_clear_pins(const char *dir, struct err *e)
{
	return dp_clear_pins_keep(dir, NULL, e);
}

int dp_clear_pins_keep(const char *dir, const char *keep, struct err *e)
{
	struct stat st;
	if (stat(dir, &st) != 0)
		return errno == ENOENT ? 0 : err_set(e, "clear pins %s: %s", dir, strerror(errno));
	/* Deleting a whole tree is only safe where nothing but pins can live. */
	if (!dp_on_bpffs(dir))
		return err_set(e, "clear pins %s: not on a bpf filesystem, refusing to delete", dir);
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return err_set(e, "clear pins %s: %s", dir, strerror(errno));
	return clear_tree_at(fd, dir, 0, keep, e);
}

/* ---- probe ---- */

static bool has_caps(bool *sys_admin, bool *net_admin, bool *bpf)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data) != 0)
		return false;
	uint64_t eff = (uint64_t)data[1].effective << 32 | data[0].effective;
	*sys_admin = eff & (1ull << CAP_SYS_ADMIN);
	*net_admin = eff & (1ull << CAP_NET_ADMIN);
	*bpf = eff & (1ull << 39 /* CAP_BPF, absent from older headers */);
	return true;
}

bool dataplane_cgroup2_mount(char *where, size_t len)
{
	FILE *f = fopen("/proc/mounts", "re");
	if (!f)
		return false;
	char dev[256], dir[1024], type[64];
	bool found = false;
	while (!found && fscanf(f, "%255s %1023s %63s %*[^\n]", dev, dir, type) == 3)
		if (strcmp(type, "cgroup2") == 0) {
			snprintf(where, len, "%s", dir);
			found = true;
		}
	fclose(f);
	return found;
}

int dataplane_probe(const char *pin_dir, struct err *e)
{
	struct sbuf missing;
	sbuf_init(&missing);
	bool sys_admin = false, net_admin = false, bpf = false;
	if (!has_caps(&sys_admin, &net_admin, &bpf))
		sbuf_puts(&missing, "; cannot read own capabilities (capget)");
	else if (!sys_admin || !net_admin)
		/* CAP_SYS_ADMIN: setns into pods and mount bpffs; CAP_NET_ADMIN: cgroup, TC and
		 * sk_lookup attachment; CAP_BPF alone is not enough for those. */
		sbuf_printf(&missing,
			    "; missing capabilities:%s%s%s (run moatd as root, or grant "
			    "CAP_SYS_ADMIN, CAP_NET_ADMIN and CAP_BPF)",
			    sys_admin ? "" : " CAP_SYS_ADMIN", net_admin ? "" : " CAP_NET_ADMIN",
			    bpf || sys_admin ? "" : " CAP_BPF");
	struct err fs_err;
	if (sys_admin && dp_ensure_bpffs(pin_dir, &fs_err) < 0)
		sbuf_printf(&missing, "; %s", fs_err.msg);
	char cg[1024];
	if (!dataplane_cgroup2_mount(cg, sizeof(cg)))
		sbuf_puts(&missing,
			  "; no cgroup2 filesystem in /proc/mounts (mount one: `mount -t cgroup2 "
			  "none /sys/fs/cgroup/unified`, or boot with systemd.unified_cgroup_"
			  "hierarchy=1)");
	if (access("/sys/kernel/btf/vmlinux", R_OK) != 0)
		sbuf_printf(&missing,
			    "; /sys/kernel/btf/vmlinux: %s (the kernel needs CONFIG_DEBUG_INFO_BTF=y "
			    "for CO-RE; Debian's kernels have it)",
			    strerror(errno));
	int rc = 0;
	if (missing.len > 0)
		rc = err_set(e, "BPF data plane unavailable: %s", missing.s + 2);
	sbuf_free(&missing);
	return rc;
}
