/* moatd's control socket (see ctl.h for the protocol). */
#ifndef MOAT_CTL_SERVER_H
#define MOAT_CTL_SERVER_H

#include "core/util.h"

struct agent;
struct ctl_server;

struct ctl_server *ctl_server_new(struct agent *a, const char *path, struct err *e);
void ctl_server_free(struct ctl_server *s);

#endif
