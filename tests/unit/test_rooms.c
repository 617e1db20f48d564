/* The agent's rooms (directories under agent/) depend on each other one way only: an
 * `#include "room/..."` from one room's file into another room is an edge, and the graph of
 * rooms has no cycle (state -> proxy and config -> policy were the last ones: proxy/ now
 * implements state/proxy_ops.h, and lint runs after the load, not inside it), and a room's
 * private header (proxy/proxy_state.h) is included by that room only. Read from the source
 * tree the unit runner starts in (the repository root). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"
#include "test.h"

#define MAX_ROOMS 32

struct rooms {
	char names[MAX_ROOMS][256];
	size_t n;
	/* edge[a][b]: a file of room a includes a header of room b; why[a][b] names one file */
	bool edge[MAX_ROOMS][MAX_ROOMS];
	char why[MAX_ROOMS][MAX_ROOMS][600];
	/* the first file that includes another room's private header, "" when none */
	char leak[600];
};

/* Headers only their own room may include: what lies behind them is reached through the
 * room's functions (proxy/proxy_state.h: the connection lists behind struct agent.proxy). */
static const char *const private_headers[] = {"proxy/proxy_state.h"};

/* s points after `#include "`: note the file when it names another room's private header. */
static void check_private(struct rooms *r, int from, const char *s, const char *shown)
{
	for (size_t i = 0; i < ARRAY_SIZE(private_headers) && !r->leak[0]; i++) {
		const char *h = private_headers[i];
		size_t n = strlen(h), room = (size_t)(strchr(h, '/') - h);
		bool own = strlen(r->names[from]) == room && strncmp(r->names[from], h, room) == 0;
		if (!own && strncmp(s, h, n) == 0 && s[n] == '"')
			snprintf(r->leak, sizeof(r->leak), "%s includes %s", shown, h);
	}
}

static int room_index(const struct rooms *r, const char *name, size_t len)
{
	for (size_t i = 0; i < r->n; i++)
		if (strlen(r->names[i]) == len && strncmp(r->names[i], name, len) == 0)
			return (int)i;
	return -1;
}

static bool is_source(const char *name)
{
	size_t n = strlen(name);
	return n > 2 && name[n - 2] == '.' && (name[n - 1] == 'c' || name[n - 1] == 'h');
}

/* Every `#include "other/..."` of one file becomes an edge from its room. */
static void scan_file(struct rooms *r, int from, const char *path, const char *shown)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	char line[512];
	while (fgets(line, sizeof(line), f)) {
		const char *s = line;
		while (*s == ' ' || *s == '\t')
			s++;
		if (strncmp(s, "#include \"", 10) != 0)
			continue;
		s += 10;
		check_private(r, from, s, shown);
		const char *slash = strchr(s, '/');
		const char *quote = strchr(s, '"');
		if (!slash || (quote && quote < slash))
			continue;
		int to = room_index(r, s, (size_t)(slash - s));
		if (to < 0 || to == from || r->edge[from][to])
			continue;
		r->edge[from][to] = true;
		snprintf(r->why[from][to], sizeof(r->why[from][to]), "%s", shown);
	}
	fclose(f);
}

/* The rooms under root (a directory like "agent") and their include edges. */
static bool rooms_read(const char *root, struct rooms *r)
{
	memset(r, 0, sizeof(*r));
	DIR *d = opendir(root);
	if (!d)
		return false;
	for (struct dirent *de; (de = readdir(d)) && r->n < MAX_ROOMS;) {
		char *p = xasprintf("%s/%s", root, de->d_name);
		struct stat st;
		if (de->d_name[0] != '.' && stat(p, &st) == 0 && S_ISDIR(st.st_mode))
			snprintf(r->names[r->n++], sizeof(r->names[0]), "%s", de->d_name);
		free(p);
	}
	closedir(d);
	for (size_t i = 0; i < r->n; i++) {
		char *dir = xasprintf("%s/%s", root, r->names[i]);
		DIR *rd = opendir(dir);
		for (struct dirent *de; rd && (de = readdir(rd));) {
			if (!is_source(de->d_name))
				continue;
			char *p = xasprintf("%s/%s", dir, de->d_name);
			char *shown = xasprintf("%s/%s", r->names[i], de->d_name);
			scan_file(r, (int)i, p, shown);
			free(shown);
			free(p);
		}
		if (rd)
			closedir(rd);
		free(dir);
	}
	return r->n > 0;
}

/* Depth-first search; on a cycle, its path ("a -> b (a/x.c) -> a (b/y.h)") goes to out. */
static bool dfs(const struct rooms *r, int v, int *state, int *stack, int depth, char *out,
		size_t len)
{
	state[v] = 1;
	stack[depth] = v;
	for (size_t w = 0; w < r->n; w++) {
		if (!r->edge[v][w])
			continue;
		if (state[w] == 1) {
			int k = depth;
			while (stack[k] != (int)w)
				k--;
			size_t o = (size_t)snprintf(out, len, "%s", r->names[w]);
			for (int i = k; i <= depth && o < len; i++) {
				int to = i < depth ? stack[i + 1] : (int)w;
				o += (size_t)snprintf(out + o, len - o, " -> %s (%s)", r->names[to],
						      r->why[stack[i]][to]);
			}
			return true;
		}
		if (state[w] == 0 && dfs(r, (int)w, state, stack, depth + 1, out, len))
			return true;
	}
	state[v] = 2;
	return false;
}

static bool rooms_cycle(const struct rooms *r, char *out, size_t len)
{
	int state[MAX_ROOMS] = {0}, stack[MAX_ROOMS + 1];
	for (size_t v = 0; v < r->n; v++)
		if (state[v] == 0 && dfs(r, (int)v, state, stack, 0, out, len))
			return true;
	return false;
}

static bool has_edge(const struct rooms *r, const char *from, const char *to)
{
	int a = room_index(r, from, strlen(from)), b = room_index(r, to, strlen(to));
	return a >= 0 && b >= 0 && r->edge[a][b];
}

TEST(agent_rooms_include_each_other_without_a_cycle)
{
	static struct rooms r;
	REQUIRE(rooms_read("agent", &r)); /* the unit runner starts in the repository root */
	char cycle[1024] = "";
	CHECK_MSG(!rooms_cycle(&r, cycle, sizeof(cycle)), "include cycle between rooms: %s", cycle);
	CHECK_MSG(!has_edge(&r, "state", "proxy"), "state/ includes proxy/ (%s): call it through "
		  "state/proxy_ops.h", r.why[room_index(&r, "state", 5)][room_index(&r, "proxy", 5)]);
	CHECK_MSG(!has_edge(&r, "config", "policy"), "config/ includes policy/ (%s): the loader "
		  "must not lint", r.why[room_index(&r, "config", 6)][room_index(&r, "policy", 6)]);
	CHECK_MSG(!r.leak[0], "%s: another room's private header; use its functions", r.leak);
	/* the scan sees real edges (a check that reads nothing would pass anything) */
	CHECK(has_edge(&r, "proxy", "state"));
	CHECK(has_edge(&r, "policy", "config"));
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

TEST(room_checks_find_a_planted_cycle_and_private_header)
{
	char root[] = "/tmp/moat-rooms-XXXXXX";
	REQUIRE(mkdtemp(root));
	char *a = xasprintf("%s/alpha", root), *b = xasprintf("%s/beta", root);
	char *fa = xasprintf("%s/x.c", a), *fb = xasprintf("%s/y.h", b);
	mkdir(a, 0700);
	mkdir(b, 0700);
	write_text(fa, "#include <stdio.h>\n#include \"beta/y.h\"\n");
	write_text(fb, "  #include \"alpha/x.h\" /* back */\n");
	static struct rooms r;
	CHECK(rooms_read(root, &r));
	char cycle[1024] = "";
	CHECK(rooms_cycle(&r, cycle, sizeof(cycle)));
	CHECK_CONTAINS(cycle, "alpha/x.c");
	CHECK_CONTAINS(cycle, "beta/y.h");
	write_text(fb, "#include \"core/util.h\"\n"); /* no room "core" here: no edge */
	CHECK(rooms_read(root, &r));
	CHECK(!rooms_cycle(&r, cycle, sizeof(cycle)));
	CHECK_STR(r.leak, "");
	write_text(fb, "#include \"proxy/proxy_state.h\"\n"); /* beta is not proxy/ */
	CHECK(rooms_read(root, &r));
	CHECK_CONTAINS(r.leak, "beta/y.h includes proxy/proxy_state.h");
	unlink(fa);
	unlink(fb);
	rmdir(a);
	rmdir(b);
	rmdir(root);
	free(a);
	free(b);
	free(fa);
	free(fb);
}
