/*
 * The request-target: its path, query and (absolute-form) authority.
 */
#ifndef PT_TARGET_H
#define PT_TARGET_H

#include "request.h"

/* Sets req->path, req->query and req->authority from req->target. */
void pt_target_split(pt_request_t *req);

#endif
