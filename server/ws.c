/*
 * A WebSocket connection after its 101 (RFC 6455), on the loop thread. libwslay's frame layer reads and writes the
 * frames (headers, lengths, unmasking); this file is the message layer above it: the checks a server owes its
 * clients (5.1-5.5, 8.1), fragments joined into messages, permessage-deflate, control frames, the closing handshake
 * (7.1), keep-alive pings, and handing whole messages to the app.
 *
 * wslay's event layer does some of this too, but it copies each message twice, answers framing errors with a close
 * frame that carries no code, leaves compressed text unchecked and keeps a send queue of its own outside the
 * connection's back-pressure; the frame layer under it has none of those.
 *
 * Messages for the app are assembled in place at the end of `inbox`, each behind a 5-byte record header (length,
 * kind), so a message is copied once: from wslay's buffer into the inbox. The app reads them with pt_ws_recv.
 */
#include "ws.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>

#include "conn.h"
#include "log.h"
#include "out.h"
#include "utf8.h"
#include "ws_deflate.h"
#include "ws_internal.h"

#define REC_HEAD 5               /* a message's record header in the inbox: 4 bytes of length, 1 of kind */
#define INBOX_HIGH (1024 * 1024) /* unread messages beyond which the connection stops reading */
#define INBOX_LOW (256 * 1024)   /* ... and below which it reads again */
#define COMPRESS_MIN 64          /* messages shorter than this go out uncompressed (RFC 7692 6: the sender's choice) */

struct pt_ws_s {
    pt_conn_t *c;
    wslay_frame_context_ptr frame;
    const uint8_t *in; /* the bytes pt_ws_feed is reading */
    size_t in_len;
    bool deflate_on;
    pt_ws_deflate_t deflate;

    /* The frame being received. */
    bool in_frame;
    uint8_t f_op;
    uint64_t f_got;
    uint8_t ctrl[125];
    size_t ctrl_len;
    /* The message being received (m_op 0: none): its record starts at msg_at in the inbox. */
    uint8_t m_op;
    bool m_compressed;
    pt_utf8_t utf8;
    size_t msg_at;
    /* Complete messages: from rpos to done; done to len is the message being received. */
    pt_buf_t inbox;
    size_t rpos, done;
    bool paused; /* reading stopped: the app is behind by INBOX_HIGH */
    bool notify; /* the app is due an on_body once this batch of input is handled */

    bool read_off;       /* a close came, or the client broke the protocol: no more frames are read */
    bool close_sent;     /* ... by us: no more messages go out */
    bool close_received; /* ... from the client */
    bool over;           /* the WebSocket is finished: nothing more to read or send */
    unsigned code_sent, code_received;
    char reason[123];
    size_t reason_len;
    uint64_t close_due, next_ping, pong_due; /* loop times (ms), 0 when not pending */
    uint32_t pings;
    uint64_t bytes_out, end_ns;
};

/* ------------------------------------------------------------------------------------------------------------ */
/* wslay's I/O: input from the bytes being fed, output straight into the connection's buffer */

static ssize_t
on_wslay_recv(uint8_t *buf, size_t len, int flags, void *user)
{
    pt_ws_t *ws = user;
    size_t n = len < ws->in_len ? len : ws->in_len;

    memcpy(buf, ws->in, n);
    ws->in += n;
    ws->in_len -= n;
    return (ssize_t)n; /* 0: wslay reports WSLAY_ERR_WANT_READ */
}

static ssize_t
on_wslay_send(const uint8_t *data, size_t len, int flags, void *user)
{
    pt_ws_t *ws = user;

    return pt_buf_append(&ws->c->wbuf, data, len) == 0 ? (ssize_t)len : -1;
}

static int
on_wslay_genmask(uint8_t *buf, size_t len, void *user)
{
    memset(buf, 0, len); /* a server never masks (RFC 6455 5.1): wslay asks only when told to */
    return 0;
}

static const struct wslay_frame_callbacks wslay_io = { on_wslay_send, on_wslay_recv, on_wslay_genmask };

/* ------------------------------------------------------------------------------------------------------------ */
/* Frames out */

static int
frame_out(pt_ws_t *ws, uint8_t op, bool compressed, const void *data, size_t len)
{
    pt_conn_t *c = ws->c;
    struct wslay_frame_iocb io = { 0 };
    ssize_t r;

    if (c->state == PT_CONN_CLOSED) {
        return -EPIPE;
    }
    if (pt_buf_reserve(&c->wbuf, len + 14) < 0) {
        return -ENOMEM;
    }
    io.fin = 1;
    io.rsv = compressed ? 4 : 0; /* RSV1: permessage-deflate */
    io.opcode = op;
    io.payload_length = len;
    io.data = data;
    io.data_length = len;
    r = wslay_frame_send(ws->frame, &io);
    if (r < 0 || (size_t)r != len) {
        return -ENOMEM; /* the buffer was reserved: only an allocation can fail */
    }
    ws->bytes_out += len;
    pt_out_soon(c);
    return 0;
}

/* A close frame: code (0: none) and reason. */
static void
close_out(pt_ws_t *ws, unsigned code, const char *reason, size_t len)
{
    uint8_t payload[125];

    if (ws->close_sent) {
        return;
    }
    ws->close_sent = true;
    ws->code_sent = code;
    if (code != 0) {
        payload[0] = (uint8_t)(code >> 8);
        payload[1] = (uint8_t)code;
        len = len > 123 ? 123 : len;
        if (len > 0) {
            memcpy(payload + 2, reason, len);
        }
    }
    frame_out(ws, WSLAY_CONNECTION_CLOSE, false, payload, code != 0 ? len + 2 : 0);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* The end */

static void ws_arm(pt_ws_t *ws);

/* We close first: the close frame, then --ws-close-timeout for the client's. */
static void
ws_begin_close(pt_ws_t *ws, unsigned code, const char *reason, size_t len)
{
    close_out(ws, code, reason, len);
    ws->close_due = uv_now(ws->c->srv->loop) + (uint64_t)(ws->c->srv->cfg->ws_close_timeout * 1000);
    ws_arm(ws);
}

static void
ws_notify(pt_ws_t *ws)
{
    pt_conn_t *c = ws->c;
    pt_app_t *app = c->srv->app;

    ws->notify = false;
    if (c->app_busy && app->on_body != NULL) {
        app->on_body(app, &c->req);
    }
}

/* The WebSocket is finished. The connection ends once its last bytes are out (lingering after a failure: the
 * client may still be sending, and an RST would destroy our close frame). */
static void
ws_over(pt_ws_t *ws, bool linger)
{
    if (ws->over) {
        return;
    }
    ws->over = ws->read_off = true;
    ws->end_ns = uv_hrtime();
    ws->notify = true;
    pt_conn_end(ws->c, linger);
}

/* The client broke the protocol: close with `code`, tell the app, end the connection (RFC 6455 7.1.7). */
static int
ws_fail(pt_ws_t *ws, unsigned code, const char *why)
{
    pt_conn_t *c = ws->c;

    pt_log_info("%s:%d WebSocket closed with %u: %s", c->remote_addr, c->remote_port, code, why);
    close_out(ws, code, why, strlen(why));
    ws_over(ws, true);
    return -1;
}

bool
pt_ws_close_code_sendable(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

/* The client's close frame: the handshake answered (or completed, if we began it). */
static int
close_in(pt_ws_t *ws)
{
    unsigned code = PT_WS_NO_STATUS;

    if (ws->ctrl_len == 1) {
        return ws_fail(ws, PT_WS_PROTOCOL_ERROR, "a close frame with a one-byte payload");
    }
    if (ws->ctrl_len >= 2) {
        code = (unsigned)ws->ctrl[0] << 8 | ws->ctrl[1];
        if (!pt_ws_close_code_sendable(code)) {
            return ws_fail(ws, PT_WS_PROTOCOL_ERROR, "a close frame with a code that may not be sent");
        }
        if (!pt_utf8_valid(ws->ctrl + 2, ws->ctrl_len - 2)) {
            return ws_fail(ws, PT_WS_INVALID_DATA, "a close reason that is not UTF-8");
        }
        ws->reason_len = ws->ctrl_len - 2;
        memcpy(ws->reason, ws->ctrl + 2, ws->reason_len);
    }
    ws->close_received = ws->read_off = true;
    ws->code_received = code;
    close_out(ws, code == PT_WS_NO_STATUS ? 0 : code, NULL, 0); /* echo the code, as endpoints do (5.5.1) */
    ws_over(ws, false);
    return -1;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Frames in */

static int
message_begin(pt_ws_t *ws, const struct wslay_frame_iocb *io)
{
    const uint8_t head[REC_HEAD] = { 0 };

    if (ws->m_op != 0) {
        return ws_fail(ws, PT_WS_PROTOCOL_ERROR, "a new message before the previous one ended");
    }
    if (io->rsv != 0 && !(io->rsv == 4 && ws->deflate_on)) {
        return ws_fail(ws, PT_WS_PROTOCOL_ERROR, "reserved bits set that no extension defines");
    }
    ws->m_op = io->opcode;
    ws->m_compressed = io->rsv == 4;
    ws->utf8 = (pt_utf8_t){ 0 };
    ws->msg_at = ws->inbox.len;
    return pt_buf_append(&ws->inbox, head, REC_HEAD) == 0 ? 0 : ws_fail(ws, PT_WS_INTERNAL_ERROR, "out of memory");
}

/* A frame's header is in: the checks that need no payload. */
static int
frame_begin(pt_ws_t *ws, const struct wslay_frame_iocb *io)
{
    uint64_t max = ws->c->srv->cfg->ws_max_size;

    if (!io->mask) {
        return ws_fail(ws, PT_WS_PROTOCOL_ERROR, "an unmasked frame from the client");
    }
    ws->in_frame = true;
    ws->f_op = io->opcode;
    ws->f_got = 0;
    ws->ctrl_len = 0;
    switch (io->opcode) {
    case WSLAY_CONNECTION_CLOSE:
    case WSLAY_PING:
    case WSLAY_PONG:
        return io->rsv == 0 ? 0 : ws_fail(ws, PT_WS_PROTOCOL_ERROR, "reserved bits set on a control frame");
    case WSLAY_TEXT_FRAME:
    case WSLAY_BINARY_FRAME:
        if (message_begin(ws, io) < 0) {
            return -1;
        }
        break;
    case WSLAY_CONTINUATION_FRAME:
        if (ws->m_op == 0) {
            return ws_fail(ws, PT_WS_PROTOCOL_ERROR, "a continuation frame with no message to continue");
        }
        if (io->rsv != 0) {
            return ws_fail(ws, PT_WS_PROTOCOL_ERROR, "reserved bits set on a continuation frame");
        }
        break;
    default: return ws_fail(ws, PT_WS_PROTOCOL_ERROR, "a reserved opcode");
    }
    if (!ws->m_compressed && ws->inbox.len - ws->msg_at - REC_HEAD + io->payload_length > max) {
        return ws_fail(ws, PT_WS_TOO_BIG, "a message larger than --ws-max-size");
    }
    return 0;
}

/* Payload bytes of a text or binary frame: into the message, inflated and checked as they come. */
static int
message_data(pt_ws_t *ws, const uint8_t *p, size_t n, bool last)
{
    size_t from = ws->inbox.len, have = ws->inbox.len - ws->msg_at - REC_HEAD;
    uint64_t max = ws->c->srv->cfg->ws_max_size;

    if (ws->m_compressed) {
        size_t room = (size_t)(max - have);
        int r = pt_ws_inflate(&ws->deflate, p, n, last, &ws->inbox, &room);

        if (r == -E2BIG) {
            return ws_fail(ws, PT_WS_TOO_BIG, "a message that inflates past --ws-max-size");
        }
        if (r < 0) {
            return ws_fail(ws, r == -ENOMEM ? PT_WS_INTERNAL_ERROR : PT_WS_INVALID_DATA,
                           r == -ENOMEM ? "out of memory" : "a compressed message that does not inflate");
        }
    } else if (n > 0 && pt_buf_append(&ws->inbox, p, n) < 0) {
        return ws_fail(ws, PT_WS_INTERNAL_ERROR, "out of memory");
    }
    if (ws->m_op == WSLAY_TEXT_FRAME
        && !pt_utf8_feed(&ws->utf8, (const uint8_t *)ws->inbox.data + from, ws->inbox.len - from)) {
        return ws_fail(ws, PT_WS_INVALID_DATA, "invalid UTF-8 in a text message");
    }
    return 0;
}

static int
message_end(pt_ws_t *ws)
{
    uint8_t *rec;
    uint32_t len;

    if (ws->m_compressed && message_data(ws, NULL, 0, true) < 0) {
        return -1;
    }
    if (ws->m_op == WSLAY_TEXT_FRAME && !pt_utf8_complete(&ws->utf8)) {
        return ws_fail(ws, PT_WS_INVALID_DATA, "a text message that ends inside a UTF-8 character");
    }
    if (ws->close_sent) {
        ws->inbox.len = ws->msg_at; /* we are closing: the app has said it wants no more */
    } else {
        rec = (uint8_t *)ws->inbox.data + ws->msg_at;
        len = (uint32_t)(ws->inbox.len - ws->msg_at - REC_HEAD);
        memcpy(rec, &len, 4);
        rec[4] = ws->m_op == WSLAY_TEXT_FRAME;
        ws->done = ws->inbox.len;
        ws->notify = true;
    }
    ws->m_op = 0;
    return 0;
}

static int
control_end(pt_ws_t *ws)
{
    switch (ws->f_op) {
    case WSLAY_PING:
        if (!ws->close_sent) {
            frame_out(ws, WSLAY_PONG, false, ws->ctrl, ws->ctrl_len);
        }
        return 0;
    case WSLAY_PONG:
        ws->pong_due = 0; /* any pong will do: an unsolicited one is a heartbeat (5.5.3) */
        return 0;
    default: return close_in(ws);
    }
}

/* One piece of a frame, as wslay hands it over. */
static int
frame_chunk(pt_ws_t *ws, const struct wslay_frame_iocb *io)
{
    bool control = io->opcode >= WSLAY_CONNECTION_CLOSE;

    if (!ws->in_frame && frame_begin(ws, io) < 0) {
        return -1;
    }
    ws->f_got += io->data_length;
    if (control && io->data_length > 0) {
        memcpy(ws->ctrl + ws->ctrl_len, io->data, io->data_length); /* wslay holds control frames to 125 bytes */
        ws->ctrl_len += io->data_length;
    } else if (io->data_length > 0 && message_data(ws, io->data, io->data_length, false) < 0) {
        return -1;
    }
    if (ws->f_got < io->payload_length) {
        return 0;
    }
    ws->in_frame = false;
    if (control) {
        return control_end(ws);
    }
    return io->fin ? message_end(ws) : 0;
}

void
pt_ws_feed(pt_ws_t *ws, const char *data, size_t n)
{
    ws->in = (const uint8_t *)data;
    ws->in_len = n;
    while (!ws->read_off) {
        struct wslay_frame_iocb io = { 0 };
        ssize_t r = wslay_frame_recv(ws->frame, &io);

        if (r == WSLAY_ERR_WANT_READ) {
            break;
        }
        if (r < 0) {
            ws_fail(ws, PT_WS_PROTOCOL_ERROR,
                    "a malformed frame (a control frame over 125 bytes or fragmented, or a "
                    "length not in its shortest form)");
            break;
        }
        if (frame_chunk(ws, &io) < 0) {
            break;
        }
    }
    ws->in_len = 0;
    if (!ws->paused && !ws->read_off && ws->done - ws->rpos > INBOX_HIGH) {
        ws->paused = true; /* the app is behind: the client waits (and TCP tells it so) */
        pt_conn_pause_reading(ws->c);
    }
    if (ws->notify) {
        ws_notify(ws);
    }
}

void
pt_ws_on_eof(pt_ws_t *ws)
{
    ws_over(ws, false);
    if (ws->notify) {
        ws_notify(ws);
    }
}

/* ------------------------------------------------------------------------------------------------------------ */
/* For the app */

static pt_ws_t *
req_ws(pt_request_t *req)
{
    pt_conn_t *c = req->conn;

    return c->state == PT_CONN_CLOSED ? NULL : c->ws;
}

int
pt_ws_recv(pt_request_t *req, pt_ws_msg_t *msg)
{
    pt_ws_t *ws = req->conn->ws;
    uint32_t len;

    if (ws == NULL) {
        return -EPIPE;
    }
    if (ws->rpos > 0 && ws->rpos == ws->done) {
        /* Everything complete has been read: the message being received moves to the front. */
        memmove(ws->inbox.data, ws->inbox.data + ws->done, ws->inbox.len - ws->done);
        ws->inbox.len -= ws->done;
        ws->msg_at -= ws->m_op != 0 ? ws->done : 0;
        ws->rpos = ws->done = 0;
    }
    if (ws->rpos < ws->done) {
        const uint8_t *rec = (const uint8_t *)ws->inbox.data + ws->rpos;

        memcpy(&len, rec, 4);
        msg->text = rec[4] != 0;
        msg->data = rec + REC_HEAD;
        msg->len = len;
        ws->rpos += REC_HEAD + len;
        if (ws->paused && ws->done - ws->rpos < INBOX_LOW && !ws->read_off) {
            ws->paused = false;
            pt_conn_resume_reading(ws->c);
        }
        return 1;
    }
    return ws->read_off || req->conn->state == PT_CONN_CLOSED ? -EPIPE : 0;
}

unsigned
pt_ws_close_code(pt_request_t *req, const char **reason, size_t *len)
{
    pt_ws_t *ws = req->conn->ws;

    *reason = ws && ws->close_received ? ws->reason : "";
    *len = ws && ws->close_received ? ws->reason_len : 0;
    return ws && ws->close_received ? ws->code_received : PT_WS_ABNORMAL;
}

int
pt_ws_send(pt_request_t *req, bool text, const void *data, size_t len)
{
    pt_ws_t *ws = req_ws(req);
    uint8_t op = text ? WSLAY_TEXT_FRAME : WSLAY_BINARY_FRAME;
    int r;

    if (ws == NULL || ws->close_sent || ws->over) {
        return -EPIPE;
    }
    if (!ws->deflate_on || len < COMPRESS_MIN) {
        return frame_out(ws, op, false, data, len);
    }
    {
        pt_buf_t z = { 0 };

        r = pt_ws_deflate(&ws->deflate, data, len, &z);
        r = r == 0 ? frame_out(ws, op, true, z.data, z.len) : r;
        pt_buf_free(&z);
    }
    return r;
}

int
pt_ws_close(pt_request_t *req, unsigned code, const char *reason, size_t len)
{
    pt_ws_t *ws = req_ws(req);

    if (ws == NULL || ws->close_sent || ws->over) {
        return -EPIPE;
    }
    ws_begin_close(ws, code, reason, len);
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* The connection's side */

int
pt_ws_accept(pt_request_t *req, const char *sub, size_t sublen, const pt_header_t *headers, size_t nheaders)
{
    pt_conn_t *c = req->conn;
    const pt_config_t *cfg = c->srv->cfg;
    pt_ws_t *ws;
    char ext[160];
    bool deflate;
    int r;

    if (c->state == PT_CONN_CLOSED || req->gone || c->ws != NULL) {
        return -EPIPE;
    }
    ws = calloc(1, sizeof(*ws));
    if (ws == NULL) {
        return -ENOMEM;
    }
    ws->c = c;
    deflate = cfg->ws_per_message_deflate && pt_ws_deflate_negotiate(req, &ws->deflate.p, ext, sizeof(ext));
    r = pt_ws_head(req, sub, sublen, deflate ? ext : NULL, headers, nheaders, &c->wbuf);
    if (r == 0 && wslay_frame_context_init(&ws->frame, &wslay_io, ws) != 0) {
        r = -ENOMEM;
    }
    if (r < 0) {
        free(ws);
        return r;
    }
    ws->deflate_on = deflate;
    c->ws = ws;
    c->state = PT_CONN_WS;
    req->resp.status = 101;
    req->resp.head_done = true;
    pt_out_soon(c);
    ws->next_ping = cfg->ws_ping_interval > 0 ? uv_now(c->srv->loop) + (uint64_t)(cfg->ws_ping_interval * 1000) : 0;
    ws_arm(ws);
    pt_conn_ws_started(c); /* frames the client sent behind its request, then reading */
    return 0;
}

/* The earliest of the pending deadlines, or 0. */
static uint64_t
next_due(const pt_ws_t *ws)
{
    uint64_t due[3] = { ws->close_due, ws->pong_due, ws->next_ping }, best = 0;
    int i;

    for (i = 0; i < 3; i++) {
        if (due[i] != 0 && (best == 0 || due[i] < best)) {
            best = due[i];
        }
    }
    return best;
}

/* The client is not reading what the app sends: --client-timeout, as for an HTTP response. */
static bool
ws_writer_stalled(pt_ws_t *ws, uint64_t now)
{
    pt_conn_t *c = ws->c;

    return pt_out_queued(c) > 0 && now - c->progress >= (uint64_t)(c->srv->cfg->client_timeout * 1000);
}

void
pt_ws_on_timer(pt_ws_t *ws, uint64_t now)
{
    pt_conn_t *c = ws->c;
    const pt_config_t *cfg = c->srv->cfg;

    if (ws->over) {
        return;
    }
    if (ws->close_due != 0 && now >= ws->close_due) {
        pt_log_info("%s:%d WebSocket: no close frame from the client within --ws-close-timeout (%g s) of ours",
                    c->remote_addr, c->remote_port, c->srv->cfg->ws_close_timeout);
        ws_over(ws, false);
    } else if ((ws->pong_due != 0 && now >= ws->pong_due) || ws_writer_stalled(ws, now)) {
        pt_log_info("%s:%d WebSocket: %s: closing with 1011", c->remote_addr, c->remote_port,
                    ws->pong_due != 0 && now >= ws->pong_due ? "no pong within --ws-ping-timeout"
                                                             : "the client read nothing for --client-timeout");
        close_out(ws, PT_WS_INTERNAL_ERROR, "keepalive ping timeout", 22);
        ws_over(ws, false);
    } else if (ws->next_ping != 0 && now >= ws->next_ping) {
        uint8_t payload[4] = { (uint8_t)(ws->pings >> 24), (uint8_t)(ws->pings >> 16), (uint8_t)(ws->pings >> 8),
                               (uint8_t)ws->pings };

        ws->pings++;
        ws->next_ping = now + (uint64_t)(cfg->ws_ping_interval * 1000);
        if (!ws->close_sent && !ws->paused) {
            frame_out(ws, WSLAY_PING, false, payload, sizeof(payload));
            if (cfg->ws_ping_timeout > 0 && ws->pong_due == 0) {
                ws->pong_due = now + (uint64_t)(cfg->ws_ping_timeout * 1000);
            }
        }
    }
    if (ws->notify) {
        ws_notify(ws);
    }
    ws_arm(ws);
}

/* The connection's timer, for the earliest of the WebSocket's deadlines. */
static void
ws_arm(pt_ws_t *ws)
{
    uint64_t now = uv_now(ws->c->srv->loop), due = next_due(ws);

    if (ws->over) {
        return;
    }
    if (due != 0) {
        pt_conn_set_deadline(ws->c, (double)(due > now ? due - now : 0) / 1000.0);
    } else {
        pt_conn_set_deadline(ws->c, ws->c->srv->cfg->client_timeout); /* only the stalled-writer check is left */
    }
}

void
pt_ws_app_done(pt_ws_t *ws)
{
    if (!ws->close_sent && !ws->over) {
        ws_begin_close(ws, PT_WS_NORMAL, NULL, 0); /* the app returned without closing: the server closes (ASGI) */
    }
    if (ws->over) {
        pt_conn_end(ws->c, false);
    }
}

void
pt_ws_stop(pt_ws_t *ws)
{
    if (!ws->close_sent && !ws->over) {
        ws_begin_close(ws, PT_WS_GOING_AWAY, "server shutting down", 20);
        pt_out_flush(ws->c);
    }
}

unsigned
pt_ws_log_code(const pt_ws_t *ws)
{
    return ws->close_received ? ws->code_received : ws->close_sent ? ws->code_sent : PT_WS_ABNORMAL;
}

void
pt_ws_free(pt_ws_t *ws)
{
    pt_conn_t *c = ws->c;

    if (c->srv->cfg->access_log) {
        pt_log_access_ws(&c->req, ws->bytes_out, pt_ws_log_code(ws), ws->end_ns ? ws->end_ns : uv_hrtime());
    }
    wslay_frame_context_free(ws->frame);
    pt_ws_deflate_free(&ws->deflate);
    pt_buf_free(&ws->inbox);
    free(ws);
}
