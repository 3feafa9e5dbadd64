/*
 * WebSocket (RFC 6455) on a connection, for a loop-thread app (ASGI): the upgrade's checks and the 101
 * (ws_handshake.c), frames in and out through libwslay, messages, control frames, the closing handshake and
 * keep-alive pings (ws.c), permessage-deflate (ws_deflate.c). Loop thread only.
 *
 * The app sees messages, never frames: whole, unmasked, inflated and UTF-8-checked. It learns of every message and
 * of the close through app->on_body, and that the connection is over through app->on_gone, once.
 */
#ifndef PT_WS_H
#define PT_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "request.h"

typedef struct pt_conn_s pt_conn_t;
typedef struct pt_ws_s pt_ws_t;

/* Close codes (RFC 6455 7.4.1) the server itself uses. */
enum {
    PT_WS_NORMAL = 1000,
    PT_WS_GOING_AWAY = 1001,
    PT_WS_PROTOCOL_ERROR = 1002,
    PT_WS_NO_STATUS = 1005, /* reported, never sent: the close frame had no code */
    PT_WS_ABNORMAL = 1006,  /* reported, never sent: the connection ended without a close frame */
    PT_WS_INVALID_DATA = 1007,
    PT_WS_TOO_BIG = 1009,
    PT_WS_INTERNAL_ERROR = 1011,
};

/* ---- The upgrade (ws_handshake.c) ---- */

/* What an upgrade request asks for, decided when its head is parsed (pt_ws_classify). */
typedef enum {
    PT_WS_NONE,        /* not a WebSocket upgrade: plain HTTP */
    PT_WS_UPGRADE,     /* a valid WebSocket opening handshake */
    PT_WS_BAD_VERSION, /* Sec-WebSocket-Version other than 13: 426 */
    PT_WS_BAD_REQUEST, /* a WebSocket upgrade without a valid Sec-WebSocket-Key: 400 */
} pt_ws_kind_t;

/* Whether `req` (its head parsed, GET, HTTP/1.1, "Upgrade: websocket", "Connection: upgrade") opens a WebSocket. */
pt_ws_kind_t pt_ws_classify(const pt_request_t *req);
/* The 426 answer to a version this server does not speak, with "Sec-WebSocket-Version: 13". 0 or -ENOMEM. */
int pt_ws_reply_version(pt_buf_t *out);

/* ---- For the app (loop thread) ---- */

/*
 * Accepts the WebSocket the request opens: writes the 101 with the subprotocol the app chose (NULL: none) and its
 * extra headers, then the connection speaks WebSocket. 0, -EINVAL (a header the app may not set, or a subprotocol
 * the client did not offer), -EPIPE (the client is gone), or -ENOMEM.
 */
int pt_ws_accept(pt_request_t *req, const char *subprotocol, size_t sublen, const pt_header_t *headers,
                 size_t nheaders);
/* Sends a message (text must be valid UTF-8: the caller's str is). 0, or -EPIPE once the connection is closing. */
int pt_ws_send(pt_request_t *req, bool text, const void *data, size_t len);
/* Whether an endpoint may send `code` in a close frame (RFC 6455 7.4: 1000-1003, 1007-1014, 3000-4999). */
bool pt_ws_close_code_sendable(unsigned code);
/* Starts the closing handshake with code and reason (at most 123 bytes of UTF-8). 0, or -EPIPE when closed. */
int pt_ws_close(pt_request_t *req, unsigned code, const char *reason, size_t len);

typedef struct {
    bool text;
    const uint8_t *data; /* valid until the next pt_ws_recv or until the app returns to the loop */
    size_t len;
} pt_ws_msg_t;

/* The next message from the client: 1 with *msg set, 0 when none is waiting, -EPIPE when no more will come. */
int pt_ws_recv(pt_request_t *req, pt_ws_msg_t *msg);
/* How the connection closed (or is closing): the code the client sent (1005: none; 1006: no close frame) and its
 * reason (borrowed). Meaningful once pt_ws_recv returned -EPIPE. */
unsigned pt_ws_close_code(pt_request_t *req, const char **reason, size_t *len);

/* ---- The connection's side (conn.c, conn_timer.c) ---- */

/* Bytes from the socket, in WebSocket mode. */
void pt_ws_feed(pt_ws_t *ws, const char *data, size_t n);
/* The client half-closed or the socket failed: the connection ends without a closing handshake (1006). */
void pt_ws_on_eof(pt_ws_t *ws);
/* The connection's timer fired in WebSocket mode: pings, pong and closing deadlines. */
void pt_ws_on_timer(pt_ws_t *ws, uint64_t now);
/* The app is done with the request: close with 1000 if it did not, and end the connection once the handshake is
 * over. */
void pt_ws_app_done(pt_ws_t *ws);
/* Graceful shutdown: close with 1001 (going away) and let the closing handshake run. */
void pt_ws_stop(pt_ws_t *ws);
/* For the access log: the close code sent or received, 1006 if none. */
unsigned pt_ws_log_code(const pt_ws_t *ws);
void pt_ws_free(pt_ws_t *ws);

#endif
