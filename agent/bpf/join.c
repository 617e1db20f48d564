/* Same-node joins: two established TCP sockets put crosswise in the `joined` sockhash, so
 * the sk_skb verdict program `join_verdict` moves what each receives out of the other
 * without the bytes reaching user space (docs/bpf.md, "Same-node joins"). */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>

#include "bpf/internal.h"
#include "core/util.h"
#include "moat.skel.h"

/* Data that arrives while only one socket of the pair is in the map would find no peer and
 * land in user space. Until both are in, a receive low-water mark far above anything that
 * can arrive meanwhile keeps the kernel from running the verdict (tcp_data_ready wakes a
 * socket only once sk_rcvlowat bytes are queued); setting it back to 1 wakes it, and the
 * verdict then takes everything queued so far, in order: also what the app sent before
 * moatd accepted. */
#define JOIN_GATE_BYTES (256 * 1024)

static int set_rcvlowat(int fd, int v)
{
	return setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof(v));
}

int dp_socket_cookie(int fd, uint64_t *cookie)
{
	socklen_t l = sizeof(*cookie);
	return getsockopt(fd, SOL_SOCKET, SO_COOKIE, cookie, &l);
}

int dataplane_join_attach(struct dataplane *dp, struct err *e)
{
	int prog = bpf_program__fd(dp->skel->progs.join_verdict);
	int map = bpf_map__fd(dp->skel->maps.joined);
	if (bpf_prog_attach(prog, map, BPF_SK_SKB_STREAM_VERDICT, 0) < 0)
		return err_set(e, "attach join_verdict to map joined (sk_skb stream verdict): %s",
			       strerror(errno));
	return 0;
}

static void join_forget(struct dataplane *dp, const uint64_t cookie[2])
{
	for (int i = 0; i < 2; i++) {
		struct moat_join_key k = {.peer_cookie = cookie[i]};
		struct moat_join_bytes_key bk = {.cookie = cookie[i]};
		bpf_map__delete_elem(dp->skel->maps.joined, &k, sizeof(k), 0);
		bpf_map__delete_elem(dp->skel->maps.join_bytes, &bk, sizeof(bk), 0);
	}
}

int dataplane_join(struct dataplane *dp, const int fd[2], uint64_t cookie[2], struct err *e)
{
	for (int i = 0; i < 2; i++)
		if (dp_socket_cookie(fd[i], &cookie[i]) < 0)
			return err_set(e, "join: SO_COOKIE of fd %d: %s", fd[i], strerror(errno));
	for (int i = 0; i < 2; i++) {
		struct moat_join_bytes_key bk = {.cookie = cookie[i]};
		struct moat_join_bytes zero = {0};
		if (bpf_map__update_elem(dp->skel->maps.join_bytes, &bk, sizeof(bk), &zero,
					 sizeof(zero), BPF_ANY) < 0) {
			int err = errno;
			join_forget(dp, cookie);
			return err_set(e, "join: map join_bytes: %s", strerror(err));
		}
		set_rcvlowat(fd[i], JOIN_GATE_BYTES);
	}
	for (int i = 0; i < 2; i++) {
		/* each socket under its peer's cookie: its own cookie finds the peer */
		struct moat_join_key k = {.peer_cookie = cookie[!i]};
		__u64 v = (__u64)fd[i];
		if (bpf_map__update_elem(dp->skel->maps.joined, &k, sizeof(k), &v, sizeof(v),
					 BPF_NOEXIST) < 0) {
			int err = errno;
			join_forget(dp, cookie);
			set_rcvlowat(fd[0], 1);
			set_rcvlowat(fd[1], 1);
			return err_set(e, "join: put fd %d in sockhash joined: %s%s", fd[i],
				       strerror(err),
				       err == EOPNOTSUPP ? " (the socket is not an established TCP "
							   "socket)" : "");
		}
	}
	/* Both in: lower the gate. The kernel wakes each socket and the verdict redirects
	 * whatever was queued meanwhile. */
	for (int i = 0; i < 2; i++)
		set_rcvlowat(fd[i], 1);
	return 0;
}

void dataplane_unjoin(struct dataplane *dp, const uint64_t cookie[2], uint64_t bytes[2])
{
	for (int i = 0; i < 2; i++) {
		struct moat_join_bytes_key bk = {.cookie = cookie[i]};
		struct moat_join_bytes b = {0};
		bytes[i] = bpf_map__lookup_elem(dp->skel->maps.join_bytes, &bk, sizeof(bk), &b,
						sizeof(b), 0) == 0 ? b.bytes : 0;
	}
	join_forget(dp, cookie);
}

uint64_t dataplane_join_bytes(struct dataplane *dp, uint64_t cookie)
{
	struct moat_join_bytes_key bk = {.cookie = cookie};
	struct moat_join_bytes b = {0};
	if (bpf_map__lookup_elem(dp->skel->maps.join_bytes, &bk, sizeof(bk), &b, sizeof(b), 0))
		return 0;
	return b.bytes;
}
