/*
 * A connection's write side: the output buffer and the queue of writes behind it, the app's output and what its
 * end means for the connection, back-pressure for loop-thread apps, and the flush and drain to-do lists.
 * Loop thread only.
 */
#ifndef PT_OUT_H
#define PT_OUT_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "conn.h"

/* Where the bytes given to pt_out_app come from, and who owns them. */
typedef enum {
    PT_OUT_LOOP,  /* a loop-thread app: borrowed, batched into the connection's buffer */
    PT_OUT_OWNED, /* a worker's buffer (or NULL), now the connection's to free; counted in req->out_pending */
} pt_out_mode_t;

/* The app's output for the current request, and its PT_SEND_* flags (request.c, handoff.c). */
void pt_out_app(pt_conn_t *c, char *data, size_t len, unsigned flags, pt_out_mode_t mode);
/* A worker's output still inside its messages (small ones), in one writev; counted in req->out_pending too. */
void pt_out_appv(pt_conn_t *c, const uv_buf_t *bufs, unsigned nbufs, unsigned flags);
/* Writes the output buffer: straight to the socket when nothing is queued, else behind the queue. */
void pt_out_flush(pt_conn_t *c);
/* Writes the output buffer once the loop turns (before it next polls): what Python sends meanwhile joins it. */
void pt_out_soon(pt_conn_t *c);
/* Response bytes not yet on the wire. */
size_t pt_out_queued(pt_conn_t *c);
/* The drain idle runs for c at the top of the loop: an HTTP/2 stream's app whose queue came down is due on_drain. */
void pt_out_drain_soon(pt_conn_t *c);
/* A loop-thread app stops producing until on_drain. */
void pt_out_suspend(pt_conn_t *c);
/* "100 Continue", unless the response has started. */
void pt_out_continue(pt_conn_t *c);
/* A complete reply of the server's own (an error), replacing whatever output was buffered; without a body when
 * it answers a HEAD. 0 or -ENOMEM. */
int pt_out_reply(pt_conn_t *c, int status);
/* The connection is going idle: an output buffer grown large goes back to malloc. */
void pt_out_release(pt_conn_t *c);
/* TLS: what the connection has to send by itself (the handshake's records, an alert); and its close_notify. */
void pt_out_tls_pending(pt_conn_t *c);
void pt_out_tls_close(pt_conn_t *c);

#endif
