/*
 * An HTTP/2 connection: the nghttp2 session, what it is told (settings, limits) and what it tells us (callbacks),
 * frames out through out.c, and the connection's timers and end. The streams are h2_stream.c's.
 *
 * nghttp2 validates the protocol (frame sizes and order, stream states, HPACK, pseudo-headers, Content-Length
 * against DATA) and answers violations with RST_STREAM or GOAWAY itself. What is left to us are the bounds: how
 * many streams, how large a header list, how much unread body and unsent response, how long a client may stall,
 * and the floods nghttp2 counts for us when asked (RST_STREAM, CONTINUATION, PING and SETTINGS acknowledgements).
 *
 * Sending: frames are serialized into the connection's output buffer (out.c encrypts and writes it), DATA without a
 * copy inside nghttp2 (send_data_callback). Once more than PT_OUT_HIGH bytes wait for the socket, nghttp2 is told
 * to wait (NGHTTP2_ERR_WOULDBLOCK); the drain sends the rest. So a client that opens its windows wide and does not
 * read holds at most PT_OUT_HIGH here, and each stream's app is held back by its own queue.
 */
#include "h2_stream.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "tls.h"

/* Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS, RFC 9113 6.5.2), as nginx and h2o. */
#define H2_MAX_STREAMS 100
/* RST_STREAM frames a client may make us process (CVE-2023-44487, rapid reset): a burst, then so many a second. */
#define H2_RESET_BURST 200
#define H2_RESET_RATE 33

static nghttp2_session_callbacks *h2_callbacks;
static nghttp2_option *h2_options;
static uv_once_t h2_once = UV_ONCE_INIT;

static pt_h2_stream_t *
h2_stream(nghttp2_session *session, int32_t id)
{
    return nghttp2_session_get_stream_user_data(session, id);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* What nghttp2 tells us */

static int
on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    pt_h2_t *h2 = user;
    pt_h2_stream_t *s;

    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    s = pt_h2_stream_new(h2, frame->hd.stream_id);
    if (s == NULL) {
        pt_log_error("%s:%d HTTP/2: out of memory for a stream", h2->c->remote_addr, h2->c->remote_port);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the stream is reset */
    }
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, s);
    return 0;
}

static int
on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
          const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
    pt_h2_stream_t *s = h2_stream(session, frame->hd.stream_id);

    (void)flags;
    (void)user;
    if (s == NULL || frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0; /* trailers: nothing of them reaches the app */
    }
    return pt_h2_stream_header(s, name, namelen, value, valuelen);
}

static int
on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    pt_h2_t *h2 = user;
    pt_h2_stream_t *s = h2_stream(session, frame->hd.stream_id);
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;

    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (s == NULL) {
            break;
        }
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            pt_h2_stream_head_done(s, end);
        } else if (end) {
            pt_h2_stream_body_end(s); /* trailers end the body */
        }
        break;
    case NGHTTP2_DATA:
        pt_conn_progress(h2->c);
        if (s != NULL && end) {
            pt_h2_stream_body_end(s);
        }
        break;
    case NGHTTP2_WINDOW_UPDATE:
        pt_conn_progress(h2->c);
        if (s != NULL) {
            s->progress = uv_now(h2->c->srv->loop);
        }
        break;
    default: break;
    }
    return 0;
}

static int
on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *user)
{
    pt_h2_stream_t *s = h2_stream(session, id);

    (void)flags;
    (void)user;
    if (s != NULL) {
        pt_h2_stream_data(s, data, len);
    } else {
        nghttp2_session_consume_connection(session, len); /* a stream we reset: its bytes still fill the window */
    }
    return 0;
}

static int
on_stream_close(nghttp2_session *session, int32_t id, uint32_t error_code, void *user)
{
    pt_h2_stream_t *s = h2_stream(session, id);

    (void)user;
    if (s != NULL) {
        pt_h2_stream_closed(s, error_code);
    }
    return 0;
}

/* A response that ended before the request did (an early 413, or an app that answered without reading): the
 * client is asked to stop sending, without an error (RFC 9113 8.1). */
static int
on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    (void)user;
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA)
        && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
        && nghttp2_session_get_stream_remote_close(session, frame->hd.stream_id) == 0) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    }
    return 0;
}

/* Whether the connection's output is over its bound: nghttp2 is then told to wait, and the drain sends again. */
static bool
h2_hold(pt_h2_t *h2)
{
    bool over = pt_out_queued(h2->c) > PT_OUT_HIGH;

    h2->held = h2->held || over;
    return over;
}

static ssize_t
on_send(nghttp2_session *session, const uint8_t *data, size_t len, int flags, void *user)
{
    pt_h2_t *h2 = user;
    pt_conn_t *c = h2->c;

    (void)session;
    (void)flags;
    if (h2_hold(h2)) {
        return NGHTTP2_ERR_WOULDBLOCK;
    }
    if (pt_buf_append(&c->wbuf, data, len) < 0) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return (ssize_t)len;
}

static int
on_send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
             nghttp2_data_source *source, void *user)
{
    pt_h2_t *h2 = user;

    (void)session;
    (void)frame;
    if (h2_hold(h2)) {
        return NGHTTP2_ERR_WOULDBLOCK;
    }
    return pt_h2_stream_send_data(source->ptr, framehd, length);
}

static int
on_error(nghttp2_session *session, int code, const char *msg, size_t len, void *user)
{
    pt_h2_t *h2 = user;

    (void)session;
    (void)code;
    pt_log_debug("%s:%d HTTP/2: %.*s", h2->c->remote_addr, h2->c->remote_port, (int)len, msg);
    return 0;
}

static void
h2_init_once(void)
{
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;

    if (nghttp2_session_callbacks_new(&cb) != 0 || nghttp2_option_new(&opt) != 0) {
        return;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_send_callback(cb, on_send);
    nghttp2_session_callbacks_set_send_data_callback(cb, on_send_data);
    nghttp2_session_callbacks_set_error_callback2(cb, on_error);
    /* Windows go back as the app reads (h2_stream.c), not as nghttp2 receives. */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* No priority tree of closed streams (RFC 9113 deprecated RFC 7540's priorities): memory a client could grow. */
    nghttp2_option_set_no_closed_streams(opt, 1);
    nghttp2_option_set_stream_reset_rate_limit(opt, H2_RESET_BURST, H2_RESET_RATE);
    /* PING and SETTINGS the client does not read the acknowledgements of: nghttp2's default bound, 1000. */
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    h2_callbacks = cb;
    h2_options = opt;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* The connection */

int
pt_h2_start(pt_conn_t *c)
{
    const pt_config_t *cfg = c->srv->cfg;
    nghttp2_settings_entry settings[] = {
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)cfg->max_header_size },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, PT_BODY_HIGH },
    };
    pt_h2_t *h2;

    uv_once(&h2_once, h2_init_once);
    h2 = calloc(1, sizeof(*h2));
    if (h2_callbacks == NULL || h2 == NULL
        || nghttp2_session_server_new2(&h2->session, h2_callbacks, h2, h2_options) != 0) {
        free(h2);
        pt_log_error("%s:%d HTTP/2: out of memory for a session", c->remote_addr, c->remote_port);
        return -1;
    }
    h2->c = c;
    c->h2 = h2;
    c->state = PT_CONN_H2;
    nghttp2_submit_settings(h2->session, NGHTTP2_FLAG_NONE, settings, sizeof(settings) / sizeof(settings[0]));
    return 0;
}

/* Starts HTTP/2 with the bytes of the preface in c->rest, if any, and then `data`. */
static pt_sniff_t
h2_start_with(pt_conn_t *c, const char *data, size_t n)
{
    c->sniffed = true;
    if (pt_h2_start(c) < 0) {
        pt_conn_close(c);
        return PT_SNIFF_WAIT;
    }
    if (c->rest.len > 0) {
        pt_h2_feed(c->h2, c->rest.data, c->rest.len);
        pt_buf_free(&c->rest);
    }
    if (n > 0 && c->state == PT_CONN_H2) {
        pt_h2_feed(c->h2, data, n);
    }
    return PT_SNIFF_WAIT;
}

pt_sniff_t
pt_h2_sniff(pt_conn_t *c, const char *data, size_t n)
{
    pt_http_mode_t mode = c->srv->cfg->http;
    size_t have = c->rest.len, take = n < PT_H2_PREFACE_LEN - have ? n : PT_H2_PREFACE_LEN - have;

    if (c->tls != NULL && *pt_tls_alpn(c->tls) != '\0') {
        c->sniffed = true;
        return strcmp(pt_tls_alpn(c->tls), "h2") == 0 ? h2_start_with(c, data, n) : PT_SNIFF_H1;
    }
    if (mode == PT_HTTP_1) {
        c->sniffed = true;
        return PT_SNIFF_H1;
    }
    if ((have == 0 || memcmp(c->rest.data, PT_H2_PREFACE, have) == 0)
        && memcmp(data, PT_H2_PREFACE + have, take) == 0) {
        if (have + take == PT_H2_PREFACE_LEN) {
            return h2_start_with(c, data, n);
        }
        if (pt_buf_append(&c->rest, data, n) < 0) {
            pt_conn_close(c);
        }
        return PT_SNIFF_WAIT; /* so far, the preface: wait for the rest of it */
    }
    c->sniffed = true;
    if (mode == PT_HTTP_2) {
        pt_buf_free(&c->rest);
        pt_conn_reply_error(c, 505, "policy: --http 2 serves HTTP/2 only (h2c by prior knowledge)");
        return PT_SNIFF_WAIT;
    }
    return have > 0 ? PT_SNIFF_H1_KEPT : PT_SNIFF_H1;
}

void
pt_h2_free(pt_h2_t *h2)
{
    if (h2 == NULL) {
        return;
    }
    while (h2->streams != NULL) {
        pt_h2_stream_free(h2->streams);
    }
    nghttp2_session_del(h2->session);
    free(h2);
}

/* Whether nghttp2 wants neither to read nor to write: it sent GOAWAY for an error of the client's, or both sides
 * are done. The streams still in the app will not be answered then. */
static bool
h2_over(pt_h2_t *h2)
{
    return !nghttp2_session_want_read(h2->session) && !nghttp2_session_want_write(h2->session);
}

/* Says GOAWAY (once), sends what is queued, and ends the connection. */
static void
h2_end(pt_h2_t *h2, uint32_t error_code)
{
    pt_conn_t *c = h2->c;

    if (!h2->goaway) {
        h2->goaway = true;
        nghttp2_submit_goaway(h2->session, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h2->session),
                              error_code, NULL, 0);
    }
    h2->ending = true;
    h2->held = false;
    nghttp2_session_send(h2->session);
    pt_conn_end(c, false);
}

void
pt_h2_send(pt_h2_t *h2)
{
    pt_conn_t *c = h2->c;
    int r;

    if (h2->in_recv || c->state >= PT_CONN_SHUTDOWN) {
        return;
    }
    do {
        h2->held = false;
        r = nghttp2_session_send(h2->session);
        if (r != 0) {
            pt_log_info("%s:%d HTTP/2: %s: closing", c->remote_addr, c->remote_port, nghttp2_strerror(r));
            pt_conn_close(c);
            return;
        }
        pt_out_flush(c);
    } while (h2->held && c->state < PT_CONN_SHUTDOWN && pt_out_queued(c) <= PT_OUT_LOW);
    if (c->state != PT_CONN_H2) {
        return;
    }
    if (h2_over(h2)) {
        h2->goaway = true; /* nghttp2's own, if it sent one */
        pt_h2_conn_gone(h2);
        h2_end(h2, NGHTTP2_NO_ERROR);
    } else if (h2->ending && h2->nstreams == 0) {
        h2_end(h2, NGHTTP2_NO_ERROR);
    }
}

void
pt_h2_kick(pt_h2_t *h2)
{
    if (!h2->in_recv) {
        pt_out_soon(h2->c); /* with what else the loop's turn produces, in one write */
    }
}

void
pt_h2_feed(pt_h2_t *h2, const char *data, size_t n)
{
    pt_conn_t *c = h2->c;
    ssize_t r;

    h2->in_recv = true;
    r = nghttp2_session_mem_recv(h2->session, (const uint8_t *)data, n);
    h2->in_recv = false;
    if (r < 0) {
        /* A flood (NGHTTP2_ERR_FLOODED), a bad preface, or a callback that failed: the session cannot go on. */
        pt_log_info("%s:%d HTTP/2: %s: closing", c->remote_addr, c->remote_port, nghttp2_strerror((int)r));
        if (r == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
            pt_conn_close(c);
            return;
        }
        nghttp2_session_terminate_session(
            h2->session, r == NGHTTP2_ERR_FLOODED ? NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_INTERNAL_ERROR);
        h2->goaway = true;
        h2->ending = true;
        pt_h2_conn_gone(h2);
        h2->held = false;
        nghttp2_session_send(h2->session); /* the GOAWAY */
        pt_conn_end(c, false);
        return;
    }
    pt_h2_send(h2);
}

void
pt_h2_stream_gone(pt_h2_t *h2)
{
    pt_conn_t *c = h2->c;

    c->app_busy = h2->app_busy > 0;
    if (c->state == PT_CONN_CLOSED || c->state == PT_CONN_ENDING) {
        if (!c->app_busy) {
            /* The handles close, or the connection ends, now that no app holds a stream. */
            pt_conn_request_finished(c);
        }
        return;
    }
    if (h2->nstreams > 0 || c->state != PT_CONN_H2) {
        return;
    }
    /* Idle: the keep-alive timeout runs; or, the session over, the connection ends once this turn's frames are out. */
    h2->settled = uv_now(c->srv->loop);
    pt_h2_kick(h2); /* pt_h2_send ends the connection if nothing is left to do (h2_over) */
    pt_conn_set_deadline(c, c->srv->cfg->keep_alive_timeout);
}

void
pt_h2_on_eof(pt_h2_t *h2)
{
    pt_h2_stream_t *s;

    for (s = h2->streams; s != NULL; s = s->next) {
        if (!s->req.body_eof && !s->closed) {
            pt_log_info("%s:%d HTTP/2 stream %d: the client closed its side before the request was complete",
                        h2->c->remote_addr, h2->c->remote_port, s->id);
            pt_h2_stream_cancel(s, true);
        }
    }
    h2->ending = true;
    pt_h2_send(h2); /* the answers to what it did send, then the end */
}

void
pt_h2_stop(pt_h2_t *h2)
{
    if (h2->goaway) {
        return;
    }
    /* RFC 9113 6.8: the streams up to the last one taken are served; the client retries later ones elsewhere. */
    h2->goaway = true;
    h2->ending = true;
    nghttp2_submit_goaway(h2->session, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h2->session),
                          NGHTTP2_NO_ERROR, NULL, 0);
    pt_h2_send(h2); /* with no stream left, it ends the connection */
}

void
pt_h2_conn_gone(pt_h2_t *h2)
{
    pt_h2_stream_t *s, *next;

    for (s = h2->streams; s != NULL; s = next) {
        next = s->next;
        pt_h2_stream_cancel(s, false);
    }
}

bool
pt_h2_wants_drain(const pt_h2_t *h2)
{
    return h2->held || h2->drain_due;
}

void
pt_h2_on_drain(pt_h2_t *h2)
{
    pt_h2_stream_t *s, *next;

    if (h2->drain_due) {
        h2->drain_due = false;
        for (s = h2->streams; s != NULL && h2->c->state != PT_CONN_CLOSED; s = next) {
            next = s->next;
            if (s->suspended && pt_h2_queued(s) <= PT_OUT_LOW) {
                pt_h2_stream_drained(s);
            }
        }
    }
    if (h2->c->state != PT_CONN_CLOSED) {
        pt_h2_send(h2);
    }
}

pt_request_t *
pt_h2_busy_request(pt_h2_t *h2)
{
    pt_h2_stream_t *s, *oldest = NULL;

    for (s = h2->streams; s != NULL; s = s->next) {
        if (s->app_busy && (oldest == NULL || s->req.start_ns < oldest->req.start_ns)) {
            oldest = s;
        }
    }
    return oldest != NULL ? &oldest->req : NULL;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Timeouts */

/* --client-timeout, per stream: a stream that waits on its client (its window never opens, its body never comes)
 * while the connection's other streams move is reset, and its app let go; a worker it held is free again. */
static void
h2_reset_stalled(pt_h2_t *h2, uint64_t now, uint64_t client_ms)
{
    pt_h2_stream_t *s, *next;
    bool reset = false;

    for (s = h2->streams; s != NULL; s = next) {
        next = s->next;
        if (!s->closed && s->dispatched && now - s->progress >= client_ms && pt_h2_stream_waits_on_client(s)) {
            pt_log_info("%s:%d HTTP/2 stream %d: no progress for --client-timeout: reset", h2->c->remote_addr,
                        h2->c->remote_port, s->id);
            pt_h2_stream_cancel(s, true);
            reset = true;
        }
    }
    if (reset) {
        pt_h2_kick(h2);
    }
}

void
pt_h2_on_timer(pt_h2_t *h2, uint64_t now)
{
    pt_conn_t *c = h2->c;
    const pt_config_t *cfg = c->srv->cfg;
    uint64_t header_ms = (uint64_t)(cfg->header_timeout * 1000), client_ms = (uint64_t)(cfg->client_timeout * 1000);
    pt_h2_stream_t *s;
    bool stalled = c->writes > 0 || c->wbuf.len > 0, heading = false;

    for (s = h2->streams; s != NULL; s = s->next) {
        heading = heading || (!s->head_done && !s->closed);
        if (!s->head_done && !s->closed && now - s->begun >= header_ms) {
            pt_log_info("%s:%d HTTP/2: no complete header block within --header-timeout: closing", c->remote_addr,
                        c->remote_port);
            h2_end(h2, NGHTTP2_NO_ERROR);
            return;
        }
        stalled = stalled || pt_h2_stream_waits_on_client(s);
    }
    if (h2->nstreams == 0) {
        /* Idle: a fresh connection's first request is due within the header timeout, later ones within the
         * keep-alive timeout of the last stream's end. */
        uint64_t since = h2->settled != 0 ? h2->settled : c->idle_since;
        uint64_t limit = h2->settled != 0 ? (uint64_t)(cfg->keep_alive_timeout * 1000) : header_ms;

        if (now - since >= limit) {
            h2_end(h2, NGHTTP2_NO_ERROR);
        } else {
            pt_conn_set_deadline(c, (double)(since + limit - now) / 1000.0);
        }
        return;
    }
    if (stalled && now - c->progress >= client_ms) {
        pt_log_info("%s:%d client made no progress for --client-timeout: closing", c->remote_addr, c->remote_port);
        pt_conn_close(c);
        return;
    }
    h2_reset_stalled(h2, now, client_ms);
    pt_conn_set_deadline(c, (double)(heading && header_ms < client_ms ? header_ms : client_ms) / 1000.0);
}
