/*
 * Worker -> loop messages: a worker's response bytes and requests to the loop ("100 Continue", read again), on one
 * list per server guarded by srv->handoff_lock, and one uv_async_t (coalescing) that drains the whole list on the
 * loop thread. Messages of one request stay in order.
 */
#ifndef PT_HANDOFF_H
#define PT_HANDOFF_H

#include "request.h"
#include "server.h"

typedef enum {
    PT_MSG_OUTPUT,      /* response bytes and/or END/DONE/ABORT */
    PT_MSG_CONTINUE,    /* send "100 Continue" */
    PT_MSG_RESUME_READ, /* the body buffer drained: read the socket again */
} pt_msg_kind_t;

int pt_handoff_init(pt_server_t *srv);
void pt_handoff_close(pt_server_t *srv);
/* From a worker: hands the bytes of `out` (the buffer is left empty) and the PT_SEND_* flags to the loop. */
void pt_handoff_output(pt_request_t *req, pt_buf_t *out, unsigned flags);
/* From a worker: PT_MSG_CONTINUE or PT_MSG_RESUME_READ. 0 or -ENOMEM. */
int pt_handoff_post(pt_request_t *req, pt_msg_kind_t kind);

#endif
