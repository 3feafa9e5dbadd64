/*
 * What the WebSocket files share (ws.c, ws_handshake.c); not for anyone else.
 */
#ifndef PT_WS_INTERNAL_H
#define PT_WS_INTERNAL_H

#include "buf.h"
#include "request.h"

/* The 101 for `req`: Sec-WebSocket-Accept from its key, the subprotocol (NULL: none) if the client offered it, the
 * extension response (NULL: none) and the app's headers but those the server sets. 0, -EINVAL or -ENOMEM. */
int pt_ws_head(const pt_request_t *req, const char *sub, size_t sublen, const char *extensions,
               const pt_header_t *headers, size_t nheaders, pt_buf_t *out);

#endif
