/*
 * permessage-deflate (RFC 7692) for a WebSocket: negotiating it from the client's offers, and zlib's inflate and
 * deflate per message. The zlib streams are made on first use, so an idle connection holds none.
 */
#ifndef PT_WS_DEFLATE_H
#define PT_WS_DEFLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

#include "buf.h"
#include "request.h"

typedef struct {
    bool server_no_context_takeover; /* deflate afresh for every message we send */
    bool client_no_context_takeover; /* the client deflates afresh: inflate afresh too */
    uint8_t server_bits;             /* our deflate window (9..15) */
    uint8_t client_bits;             /* the client's window, which our inflate needs (8..15) */
} pt_ws_pmd_t;

typedef struct {
    pt_ws_pmd_t p;
    z_stream *in, *out;
} pt_ws_deflate_t;

/*
 * The first permessage-deflate offer in the request's Sec-WebSocket-Extensions that this server accepts: true with
 * *p set and the response's extension value in resp (NUL-terminated), false if none is acceptable.
 */
bool pt_ws_deflate_negotiate(const pt_request_t *req, pt_ws_pmd_t *p, char *resp, size_t cap);

/*
 * Inflates n bytes of a compressed message into out, which may grow by at most *room bytes (*room is reduced by what
 * was added). `last` after the message's final frame. 0, -E2BIG past *room, -EINVAL for data that is not deflate, or
 * -ENOMEM.
 */
int pt_ws_inflate(pt_ws_deflate_t *d, const uint8_t *p, size_t n, bool last, pt_buf_t *out, size_t *room);
/* Compresses a whole message, appending to out. 0 or -ENOMEM. */
int pt_ws_deflate(pt_ws_deflate_t *d, const uint8_t *p, size_t n, pt_buf_t *out);
void pt_ws_deflate_free(pt_ws_deflate_t *d);

#endif
