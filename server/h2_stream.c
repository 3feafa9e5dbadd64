/*
 * An HTTP/2 stream: the request it carries, from its header block to the end of its body, and the response the app
 * writes to it.
 *
 * In: header fields land in the stream's arena and become the same pt_request_t an HTTP/1.1 head does (the
 * :authority as Host, cookies joined as RFC 9113 8.2.3 says, the pseudo-headers as method and target). Body bytes
 * go through the request's body channel; the stream's flow-control window is given back as the app reads, so a slow
 * reader stops its own client, not the connection's other streams (whose shared window is given back at once).
 *
 * Out: the app's bytes arrive as they would for HTTP/1.1, but framed by resp.c's HTTP/2 mode: a header block, then
 * the payload. The block becomes HEADERS, the payload DATA frames taken by nghttp2 as the peer's windows allow.
 */
#include <stdint.h>
#include <stdlib.h>

#include "h2_stream.h"
#include "log.h"
#include "target.h"

enum {
    PSEUDO_METHOD,
    PSEUDO_PATH,
    PSEUDO_AUTHORITY,
    PSEUDO_SCHEME
};

/* The connection's timer comes round within `seconds` (unless it is due sooner), to look at the streams then:
 * pt_h2_on_timer. */
static void
stream_due_within(pt_h2_stream_t *s, double seconds)
{
    pt_conn_t *c = s->h2->c;

    if (uv_now(c->srv->loop) + (uint64_t)(seconds * 1000) < c->deadline) {
        pt_conn_set_deadline(c, seconds);
    }
}

pt_h2_stream_t *
pt_h2_stream_new(pt_h2_t *h2, int32_t id)
{
    pt_h2_stream_t *s = calloc(1, sizeof(*s));
    int i;

    if (s == NULL) {
        return NULL;
    }
    if (pt_req_init(&s->req, h2->c) < 0) {
        free(s);
        return NULL;
    }
    s->req.h2 = s;
    s->h2 = h2;
    s->id = id;
    s->begun = uv_now(h2->c->srv->loop);
    for (i = 0; i < 4; i++) {
        s->pseudo[i] = -1;
    }
    s->next = h2->streams;
    if (h2->streams != NULL) {
        h2->streams->prev = s;
    }
    h2->streams = s;
    h2->nstreams++;
    stream_due_within(s, h2->c->srv->cfg->header_timeout); /* its header block is due */
    return s;
}

/* n of the response's bytes left the stream's queue (framed, or dropped): a worker waiting on them may go on. */
static void
stream_took(pt_h2_stream_t *s, size_t n)
{
    if (s->from_worker && n > 0) {
        pt_req_wrote(&s->req, n);
    }
}

void
pt_h2_stream_free(pt_h2_stream_t *s)
{
    pt_h2_t *h2 = s->h2;

    if (s->prev != NULL) {
        s->prev->next = s->next;
    } else {
        h2->streams = s->next;
    }
    if (s->next != NULL) {
        s->next->prev = s->prev;
    }
    h2->nstreams--;
    pt_req_destroy(&s->req);
    free(s->req.headers);
    free(s->hoff);
    pt_buf_free(&s->head);
    pt_buf_free(&s->out);
    free(s);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* The request */

static int
stream_refuse(pt_h2_stream_t *s, int status, const char *why)
{
    if (s->refuse == 0) {
        s->refuse = status;
        s->refuse_why = why;
    }
    return 0; /* the block is still decoded (HPACK's table depends on it), and answered once it ends */
}

int
pt_h2_stream_header(pt_h2_stream_t *s, const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen)
{
    const pt_config_t *cfg = s->h2->c->srv->cfg;
    uint32_t at = (uint32_t)s->head.len;

    if (s->refuse != 0) {
        return 0;
    }
    /* What HTTP/1.1 would count: the line's bytes with ": " and CRLF. */
    s->head_bytes += namelen + valuelen + 4;
    if (s->head_bytes > cfg->max_header_size) {
        return stream_refuse(s, 431, "request header fields over --max-header-size");
    }
    if (pt_buf_reserve(&s->head, namelen + valuelen) < 0) {
        return stream_refuse(s, 500, "out of memory for the request head");
    }
    pt_buf_put(&s->head, name, namelen);
    pt_buf_put(&s->head, value, valuelen);
    if (namelen > 0 && name[0] == ':') {
        /* nghttp2 let through only the four request pseudo-headers, once each, before the others. */
        static const char *const names[] = { ":method", ":path", ":authority", ":scheme" };
        int i;

        for (i = 0; i < 4; i++) {
            if (strlen(names[i]) == namelen && memcmp(names[i], name, namelen) == 0) {
                s->pseudo[i] = (int32_t)(at + namelen);
                s->pseudo_len[i] = (uint32_t)valuelen;
            }
        }
        return 0;
    }
    if (s->nhdr >= cfg->max_headers) {
        return stream_refuse(s, 431, "more request header fields than --max-headers");
    }
    if (s->nhdr == s->hcap) {
        size_t cap = s->hcap ? 2 * s->hcap : 16;
        void *p = realloc(s->hoff, cap * sizeof(*s->hoff));

        if (p == NULL) {
            return stream_refuse(s, 500, "out of memory for the request head");
        }
        s->hoff = p;
        s->hcap = cap;
    }
    s->hoff[s->nhdr][0] = at;
    s->hoff[s->nhdr][1] = (uint32_t)namelen;
    s->hoff[s->nhdr][2] = at + (uint32_t)namelen;
    s->hoff[s->nhdr][3] = (uint32_t)valuelen;
    s->nhdr++;
    return 0;
}

static pt_span_t
stream_pseudo(const pt_h2_stream_t *s, int which)
{
    if (s->pseudo[which] < 0) {
        return (pt_span_t){ "", 0 };
    }
    return (pt_span_t){ s->head.data + s->pseudo[which], s->pseudo_len[which] };
}

/* Joins the cookie fields into one (RFC 9113 8.2.3: "; " between them), for apps that read one Cookie header: 1
 * when it did (the offsets changed: the spans are to be resolved again), 0 when there were fewer than two, -1. */
static int
stream_join_cookies(pt_h2_stream_t *s)
{
    pt_request_t *req = &s->req;
    size_t i, first = SIZE_MAX, len = 0, n = 0, at;
    char *p;

    for (i = 0; i < req->nheaders; i++) {
        if (pt_span_ieq(req->headers[i].name, "cookie")) {
            first = first == SIZE_MAX ? i : first;
            len += req->headers[i].value.len + 2;
            n++;
        }
    }
    if (n < 2) {
        return 0;
    }
    p = malloc(len);
    if (p == NULL) {
        return -1;
    }
    for (i = 0, at = 0; i < req->nheaders; i++) {
        if (pt_span_ieq(req->headers[i].name, "cookie")) {
            if (at > 0) {
                memcpy(p + at, "; ", 2);
                at += 2;
            }
            memcpy(p + at, req->headers[i].value.base, req->headers[i].value.len);
            at += req->headers[i].value.len;
        }
    }
    /* The joined value lives at the arena's end (the spans are resolved again below). */
    if (pt_buf_append(&s->head, p, at) < 0) {
        free(p);
        return -1;
    }
    free(p);
    s->hoff[first][2] = (uint32_t)(s->head.len - at);
    s->hoff[first][3] = (uint32_t)at;
    for (i = first + 1, n = first + 1; i < s->nhdr; i++) {
        pt_span_t name = { s->head.data + s->hoff[i][0], s->hoff[i][1] };

        if (!pt_span_ieq(name, "cookie")) {
            memmove(s->hoff[n++], s->hoff[i], sizeof(s->hoff[i]));
        }
    }
    s->nhdr = n;
    return 1;
}

/* The header spans, from the arena's offsets (room for one more: the Host the :authority may add). */
static int
stream_resolve(pt_h2_stream_t *s)
{
    pt_request_t *req = &s->req;
    size_t i;

    free(req->headers);
    req->headers = malloc((s->nhdr + 1) * sizeof(pt_header_t));
    if (req->headers == NULL) {
        return -1;
    }
    for (i = 0; i < s->nhdr; i++) {
        req->headers[i].name = (pt_span_t){ s->head.data + s->hoff[i][0], s->hoff[i][1] };
        req->headers[i].value = (pt_span_t){ s->head.data + s->hoff[i][2], s->hoff[i][3] };
    }
    req->nheaders = s->nhdr;
    return 0;
}

/* What the head says, checked the way HTTP/1.1's is (http.c); what does not pass refuses the stream. */
static void
stream_read_head(pt_h2_stream_t *s, bool end_stream)
{
    pt_request_t *req = &s->req;
    const pt_config_t *cfg = s->h2->c->srv->cfg;
    pt_span_t authority = stream_pseudo(s, PSEUDO_AUTHORITY);
    size_t i;
    bool host = false;
    int joined;

    if (stream_resolve(s) < 0 || (joined = stream_join_cookies(s)) < 0 || (joined && stream_resolve(s) < 0)) {
        stream_refuse(s, 500, "out of memory for the request head");
        return;
    }
    req->method = stream_pseudo(s, PSEUDO_METHOD);
    req->target = stream_pseudo(s, PSEUDO_PATH);
    req->http_minor = 1;
    req->keep_alive = true;
    req->is_head = pt_span_ieq(req->method, "HEAD");
    req->chunked = false;
    req->content_length = -1;
    req->expect_continue = false;
    if (pt_span_ieq(req->method, "CONNECT")) {
        stream_refuse(s, 501, "policy: CONNECT is not served");
        return;
    }
    pt_target_split(req);
    req->authority = (pt_span_t){ "", 0 };
    if (req->target.len == 1 && req->target.base[0] == '*' && !pt_span_ieq(req->method, "OPTIONS")) {
        stream_refuse(s, 400, "policy: request-target '*' is only for OPTIONS");
        return;
    }
    for (i = 0; i < req->nheaders; i++) {
        pt_header_t *h = &req->headers[i];

        if (pt_span_ieq(h->name, "host")) {
            /* RFC 9113 8.3.1: the :authority wins over a Host that differs. */
            host = true;
            if (authority.len > 0) {
                h->value = authority;
            }
        } else if (pt_span_ieq(h->name, "content-length")) {
            req->content_length = 0; /* nghttp2 checked it is a number, and that the DATA frames add up to it */
            for (size_t k = 0; k < h->value.len; k++) {
                req->content_length = req->content_length * 10 + (h->value.base[k] - '0');
            }
        } else if (pt_span_ieq(h->name, "expect")) {
            if (!pt_span_ieq(h->value, "100-continue")) {
                stream_refuse(s, 417, "policy: Expect other than 100-continue");
                return;
            }
            req->expect_continue = !end_stream;
        }
    }
    if (!host && authority.len > 0) {
        req->headers[req->nheaders++] = (pt_header_t){ PT_SPAN("host"), authority };
    }
    if (!host && authority.len == 0) {
        stream_refuse(s, 400, "policy: HTTP/2 request without :authority or Host");
        return;
    }
    if (req->content_length >= 0 && (uint64_t)req->content_length > cfg->max_body_size) {
        stream_refuse(s, 413, "Content-Length over --max-body-size");
    }
}

/* --limit-concurrency counts streams as it counts HTTP/1.1 requests. */
static bool
stream_over_limit(const pt_h2_stream_t *s)
{
    const pt_server_t *srv = s->h2->c->srv;

    return srv->cfg->limit_concurrency > 0
        && atomic_load_explicit(&srv->totals->nbusy, memory_order_relaxed) >= srv->cfg->limit_concurrency;
}

static void stream_output(pt_h2_stream_t *s, const char *data, size_t len, unsigned flags);

/* The server answers the stream itself (a refused or failed request), and the app never sees it. */
static void
stream_reply(pt_h2_stream_t *s, int status, const char *why)
{
    pt_conn_t *c = s->h2->c;
    pt_resp_ctx_t ctx = { 1, s->req.is_head, true, true };
    pt_buf_t out = { 0 };

    s->dispatched = true;
    s->progress = uv_now(c->srv->loop);
    stream_due_within(s, s->h2->c->srv->cfg->client_timeout); /* it may wait on its client */
    pt_log_info("%s:%d %d %s: %s", c->remote_addr, c->remote_port, status, pt_status_reason(status), why);
    if (c->srv->cfg->access_log) {
        pt_log_access_refused(c->remote_addr, status);
    }
    memset(&s->req.resp, 0, sizeof(s->req.resp));
    if (pt_resp_error(&s->req.resp, &ctx, &out, status) < 0) {
        nghttp2_submit_rst_stream(s->h2->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    } else {
        stream_output(s, out.data, out.len, PT_SEND_END);
    }
    pt_buf_free(&out);
    pt_h2_kick(s->h2);
}

static void
stream_dispatch(pt_h2_stream_t *s)
{
    pt_h2_t *h2 = s->h2;
    pt_conn_t *c = h2->c;
    pt_server_t *srv = c->srv;

    if (stream_over_limit(s)) {
        stream_reply(s, 503, "--limit-concurrency reached");
        return;
    }
    s->dispatched = true;
    s->app_busy = true;
    s->progress = uv_now(srv->loop);
    stream_due_within(s, s->h2->c->srv->cfg->client_timeout); /* it may wait on its client */
    h2->app_busy++;
    c->app_busy = true;
    pt_server_request_started(srv);
    c->progress = uv_now(srv->loop);
    srv->app->on_request(srv->app, &s->req);
}

/* Tells a loop-thread streaming app (ASGI) that the body moved on; a worker is woken through the request. */
static void
stream_notify_body(pt_h2_stream_t *s)
{
    pt_app_t *app = s->h2->c->srv->app;

    if (app->on_loop && app->streams_body && s->app_busy && app->on_body != NULL) {
        app->on_body(app, &s->req);
    }
}

void
pt_h2_stream_head_done(pt_h2_stream_t *s, bool end_stream)
{
    pt_conn_t *c = s->h2->c;
    pt_app_t *app = c->srv->app;
    pt_request_t *req = &s->req;

    s->head_done = true;
    if (s->refuse == 0) {
        stream_read_head(s, end_stream);
    }
    pt_conn_origin(c, req);
    pt_req_begin(req, c->eof);
    req->body_eof = end_stream; /* HTTP/2 frames the body: it ends with the stream, whatever its length says */
    req->continue_sent = !req->expect_continue;
    if (s->refuse != 0) {
        stream_reply(s, s->refuse, s->refuse_why);
        return;
    }
    /* As for HTTP/1.1 (conn.c): streaming apps get the request now, unless a worker's waits for its body. */
    if (end_stream
        || (app->streams_body && !(c->srv->cfg->request_buffering && !app->on_loop && !req->expect_continue))) {
        stream_dispatch(s);
    } else if (!req->continue_sent) {
        /* The app reads the body only once it is all here, so the server asks for it now. */
        req->continue_sent = true;
        pt_h2_continue(s);
    }
}

/* The stream's window goes back to the client for n bytes: they may send as much again. */
static void
stream_consume(pt_h2_stream_t *s, size_t n)
{
    if (n > 0 && !s->closed) {
        nghttp2_session_consume_stream(s->h2->session, s->id, n);
    }
}

/* The request cannot be completed: the app learns that its client is gone, or the body failed. */
static void
stream_fail(pt_h2_stream_t *s, pt_body_err_t why, bool gone)
{
    pt_app_t *app = s->h2->c->srv->app;

    if (!s->app_busy) {
        return;
    }
    s->holding = true; /* the app may let go of the stream from inside on_gone or on_body: it is freed after */
    if (gone) {
        pt_req_client_gone(&s->req, why);
        if (app->on_loop && (s->suspended || app->streams_body)) {
            s->suspended = false;
            app->on_gone(app, &s->req);
        }
    } else {
        pt_req_body_fail(&s->req, why);
        stream_notify_body(s);
    }
    s->holding = false;
}

/* Frees the stream if both nghttp2 and the app are done with it. Whether it did. */
static bool
stream_release(pt_h2_stream_t *s)
{
    pt_h2_t *h2 = s->h2;

    if (!s->closed || s->app_busy || s->holding) {
        return false;
    }
    pt_h2_stream_free(s);
    pt_h2_stream_gone(h2);
    return true;
}

void
pt_h2_stream_cancel(pt_h2_stream_t *s, bool reset)
{
    stream_fail(s, PT_BODY_ERR_GONE, true);
    if (stream_release(s)) {
        return;
    }
    if (reset && !s->closed) {
        nghttp2_submit_rst_stream(s->h2->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
    }
}

void
pt_h2_stream_data(pt_h2_stream_t *s, const uint8_t *data, size_t len)
{
    pt_request_t *req = &s->req;
    const pt_config_t *cfg = s->h2->c->srv->cfg;
    int ask;

    /* The connection's window goes back at once: one stream's unread body must not stop the others. */
    nghttp2_session_consume_connection(s->h2->session, len);
    s->progress = uv_now(s->h2->c->srv->loop);
    if (s->refuse != 0 || (s->dispatched && !s->app_busy) || req->gone) {
        stream_consume(s, len); /* answered already: the bytes are dropped */
        return;
    }
    if (req->body_received + len > cfg->max_body_size) {
        if (!s->dispatched) {
            stream_reply(s, 413, "request body over --max-body-size");
        } else {
            pt_log_info("%s:%d HTTP/2 stream %d: request body over --max-body-size", s->h2->c->remote_addr,
                        s->h2->c->remote_port, s->id);
            stream_fail(s, PT_BODY_ERR_TOO_LARGE, false);
            nghttp2_submit_rst_stream(s->h2->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
        }
        return;
    }
    ask = pt_req_body_push(req, (const char *)data, len);
    if (ask < 0) {
        pt_log_error("cannot spool a request body to disk: %s", strerror(-ask));
        if (!s->dispatched) {
            stream_reply(s, 500, "cannot spool the request body");
        } else {
            stream_fail(s, PT_BODY_ERR_GONE, false);
        }
        return;
    }
    if (ask & PT_PUSH_WAKE) {
        pt_req_wake(req);
    }
    if (ask & PT_PUSH_PAUSE) {
        s->body_paused = true;
        s->unconsumed += len;
        if (!s->dispatched) {
            stream_dispatch(s); /* a worker's deferred request: PT_BODY_HIGH of it is here */
        }
    } else {
        stream_consume(s, len);
    }
    stream_notify_body(s);
}

void
pt_h2_stream_body_end(pt_h2_stream_t *s)
{
    if (s->refuse != 0 || !s->head_done || s->req.gone) {
        return;
    }
    pt_req_body_end(&s->req);
    if (!s->dispatched) {
        stream_dispatch(s);
    } else {
        stream_notify_body(s);
    }
}

void
pt_h2_resume_body(pt_h2_stream_t *s)
{
    s->body_paused = false;
    if (s->unconsumed > 0) {
        stream_consume(s, s->unconsumed);
        s->unconsumed = 0;
        pt_h2_kick(s->h2); /* the WINDOW_UPDATE */
    }
}

void
pt_h2_stream_closed(pt_h2_stream_t *s, uint32_t error_code)
{
    s->closed = true;
    if (error_code != NGHTTP2_NO_ERROR || !s->out_end) {
        stream_fail(s, PT_BODY_ERR_GONE, true); /* reset, or gone before its response was complete */
    } else if (!s->req.body_eof) {
        stream_fail(s, PT_BODY_ERR_GONE, false);
    }
    stream_took(s, s->out.len - s->out_off);
    s->out.len = s->out_off = 0;
    stream_release(s);
}

bool
pt_h2_stream_waits_on_client(pt_h2_stream_t *s)
{
    return pt_h2_queued(s) > 0 || (s->app_busy && pt_req_waits_on_client(&s->req, s->h2->c->srv->app->on_loop));
}

/* ------------------------------------------------------------------------------------------------------------ */
/* The response */

size_t
pt_h2_queued(const pt_h2_stream_t *s)
{
    return s->out.len - s->out_off;
}

static ssize_t
stream_read(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
            nghttp2_data_source *source, void *user)
{
    pt_h2_stream_t *s = source->ptr;
    size_t avail = pt_h2_queued(s);

    (void)session;
    (void)id;
    (void)buf;
    (void)user;
    if (avail > 0) {
        size_t n = avail < length ? avail : length;

        *flags |= NGHTTP2_DATA_FLAG_NO_COPY; /* pt_h2_stream_send_data writes them from `out` */
        if (n == avail && s->out_end && !s->out_short) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        }
        return (ssize_t)n;
    }
    if (s->out_end) {
        if (s->out_short) {
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM: the body came up short */
        }
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    s->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
}

int
pt_h2_stream_send_data(pt_h2_stream_t *s, const uint8_t *framehd, size_t length)
{
    pt_conn_t *c = s->h2->c;

    if (pt_buf_reserve(&c->wbuf, 9 + length) < 0) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    pt_buf_put(&c->wbuf, framehd, 9);
    pt_buf_put(&c->wbuf, s->out.data + s->out_off, length);
    s->out_off += length;
    s->progress = uv_now(c->srv->loop);
    if (s->out_off == s->out.len) {
        s->out.len = s->out_off = 0;
    } else if (s->out_off > 64 * 1024) {
        pt_buf_consume(&s->out, s->out_off);
        s->out_off = 0;
    }
    stream_took(s, length);
    if (s->suspended && pt_h2_queued(s) <= PT_OUT_LOW) {
        s->h2->drain_due = true;
        pt_out_drain_soon(c);
    }
    return 0;
}

/* The head block at the front of `out` (resp.h), whole: submitted as the response's HEADERS, with the DATA to come
 * from the stream's queue (or with END_STREAM, when nothing will). 0, 1 when the block is not all here yet, or -1. */
static int
stream_submit_head(pt_h2_stream_t *s, bool ends)
{
    const char *p = s->out.data + s->out_off, *end;
    nghttp2_data_provider prd = { .source.ptr = s, .read_callback = stream_read };
    nghttp2_nv nv[1 + 256], *nva = nv;
    uint32_t block;
    size_t n = 1, count = 1;
    int r;

    if (pt_h2_queued(s) < sizeof(block)) {
        return 1;
    }
    memcpy(&block, p, sizeof(block));
    if (pt_h2_queued(s) < block) {
        return 1;
    }
    end = p + block;
    for (const char *q = p + sizeof(block); q < end; q++) {
        count += *q == '\0';
    }
    count = (count - 1) / 2 + 1;
    if (count > sizeof(nv) / sizeof(nv[0]) && (nva = malloc(count * sizeof(*nva))) == NULL) {
        return -1;
    }
    p += sizeof(block);
    nva[0] = (nghttp2_nv){ (uint8_t *)":status", (uint8_t *)p, 7, strlen(p), NGHTTP2_NV_FLAG_NONE };
    p += strlen(p) + 1;
    while (p < end && n < count) {
        size_t nl = strlen(p), vl = strlen(p + nl + 1);

        nva[n++] = (nghttp2_nv){ (uint8_t *)p, (uint8_t *)p + nl + 1, nl, vl, NGHTTP2_NV_FLAG_NONE };
        p += nl + 1 + vl + 1;
    }
    s->out_off += block;
    stream_took(s, block);
    ends = ends && pt_h2_queued(s) == 0 && !s->out_short;
    r = nghttp2_submit_response(s->h2->session, s->id, nva, n, ends ? NULL : &prd);
    if (nva != nv) {
        free(nva);
    }
    s->head_submitted = true;
    return r == 0 ? 0 : -1;
}

/* The app's bytes join the stream's queue; its flags say whether the body ends, or the stream must be reset. */
static void
stream_output(pt_h2_stream_t *s, const char *data, size_t len, unsigned flags)
{
    pt_h2_t *h2 = s->h2;

    if (s->closed || h2->c->state == PT_CONN_CLOSED) {
        stream_took(s, len); /* never sent: release a worker waiting on them */
        return;
    }
    if (len > 0 && pt_buf_append(&s->out, data, len) < 0) {
        stream_took(s, len);
        flags |= PT_SEND_ABORT;
    }
    if (flags & PT_SEND_END) {
        s->out_end = true;
        s->out_short = s->req.resp.must_close; /* resp.c: the body came up short of its Content-Length */
    }
    if (!s->head_submitted && !(flags & PT_SEND_ABORT)) {
        int r = stream_submit_head(s, (flags & PT_SEND_END) != 0);

        if (r < 0) {
            flags |= PT_SEND_ABORT;
        }
    } else if (s->deferred && (pt_h2_queued(s) > 0 || s->out_end)) {
        s->deferred = false;
        nghttp2_session_resume_data(h2->session, s->id);
    }
    if (flags & PT_SEND_ABORT) {
        nghttp2_submit_rst_stream(h2->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    }
}

/* The app is done with the request: the stream goes once nghttp2 is done with it too. */
static void
stream_app_done(pt_h2_stream_t *s)
{
    pt_h2_t *h2 = s->h2;

    s->app_busy = false;
    s->suspended = false;
    h2->app_busy--;
    pt_server_request_ended(h2->c->srv);
    if (!stream_release(s)) {
        pt_h2_stream_gone(h2);
    }
}

static void
stream_app_flags(pt_h2_stream_t *s, unsigned flags)
{
    pt_h2_t *h2 = s->h2;

    if ((flags & PT_SEND_END) && h2->c->srv->cfg->access_log) {
        pt_log_access(&s->req, s->req.resp.status, s->req.resp.body_bytes, uv_hrtime());
    }
    if (flags & PT_SEND_DONE) {
        stream_app_done(s);
    }
    pt_h2_kick(h2);
}

void
pt_h2_app_output(pt_h2_stream_t *s, char *data, size_t len, unsigned flags, pt_out_mode_t mode)
{
    if (mode == PT_OUT_OWNED) {
        s->from_worker = true;
    }
    stream_output(s, data, len, flags);
    if (mode == PT_OUT_OWNED) {
        free(data);
    }
    stream_app_flags(s, flags);
}

void
pt_h2_app_outputv(pt_h2_stream_t *s, const uv_buf_t *bufs, unsigned nbufs, unsigned flags)
{
    unsigned i;

    s->from_worker = true;
    for (i = 0; i < nbufs; i++) {
        stream_output(s, bufs[i].base, bufs[i].len, i + 1 == nbufs ? flags : 0);
    }
    stream_app_flags(s, flags);
}

void
pt_h2_suspend(pt_h2_stream_t *s)
{
    s->suspended = true;
    if (pt_h2_queued(s) <= PT_OUT_LOW) {
        s->h2->drain_due = true;
        pt_out_drain_soon(s->h2->c);
    }
    pt_h2_kick(s->h2);
}

void
pt_h2_stream_drained(pt_h2_stream_t *s)
{
    pt_app_t *app = s->h2->c->srv->app;

    s->suspended = false;
    if (s->app_busy) {
        app->on_drain(app, &s->req);
    }
}

void
pt_h2_continue(pt_h2_stream_t *s)
{
    nghttp2_nv nv = { (uint8_t *)":status", (uint8_t *)"100", 7, 3, NGHTTP2_NV_FLAG_NONE };

    if (!s->head_submitted && !s->closed) {
        nghttp2_submit_headers(s->h2->session, NGHTTP2_FLAG_NONE, s->id, NULL, &nv, 1, NULL);
        pt_h2_kick(s->h2);
    }
}
