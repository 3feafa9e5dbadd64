/*
 * The request parser: llhttp callbacks turn the parser's spans into a pt_request_t. Spans can arrive split across
 * reads, so bytes are appended to the head arena and turned into pointers once the head is complete (the arena may
 * move while it grows). Limits are checked here, as the bytes arrive, so an oversized head is never buffered whole.
 */
#include "http.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define HTTP(p) ((pt_http_t *)(p)->data)

/* Refuses the request: llhttp stops with HPE_USER (or the callback's error) and pt_http_error says why. */
static int
refuse(pt_http_t *h, int status, const char *why)
{
    h->error_status = status;
    h->error_why = why;
    return -1;
}

static int
head_add(pt_http_t *h, const char *p, size_t n)
{
    h->head_bytes += n;
    if (h->head_bytes > h->cfg->max_header_size) {
        return refuse(h, 431, NULL);
    }
    if (pt_buf_append(&h->head, p, n) < 0) {
        return refuse(h, 500, "out of memory for the request head");
    }
    return 0;
}

/* A trailer section (after a chunked body): counted against the limit, not kept. */
static int
trailer_add(pt_http_t *h, size_t n)
{
    h->head_bytes += n;
    return h->head_bytes > h->cfg->max_header_size ? refuse(h, 431, NULL) : 0;
}

/* A callback's answer from the connection: 0, or a status to refuse the request with. */
static int
conn_answer(pt_http_t *h, int status)
{
    return status == 0 ? 0 : refuse(h, status, h->error_why);
}

static int
on_message_begin(llhttp_t *p)
{
    pt_http_t *h = HTTP(p);

    h->head.len = 0;
    h->head_bytes = 0;
    h->nhdr = 0;
    h->last_cb = 0;
    h->url_off = h->url_len = 0;
    h->error_status = 0;
    h->error_why = NULL;
    h->body_bytes = 0;
    h->in_message = true;
    h->in_trailers = false;
    return conn_answer(h, pt_conn_on_message_begin(h->conn));
}

static int
on_url(llhttp_t *p, const char *at, size_t n)
{
    pt_http_t *h = HTTP(p);

    h->url_len += (uint32_t)n;
    return head_add(h, at, n);
}

/* Room for one more header line in both tables. */
static int
header_room(pt_http_t *h)
{
    size_t cap = h->hcap ? h->hcap * 2 : 16;
    pt_hoff_t *nh;
    pt_header_t *hd;

    if (h->nhdr < h->hcap) {
        return 0;
    }
    nh = realloc(h->hoff, cap * sizeof(*nh));
    if (nh == NULL) {
        return -1;
    }
    h->hoff = nh;
    hd = realloc(h->hdrs, cap * sizeof(*hd));
    if (hd == NULL) {
        return -1;
    }
    h->hdrs = hd;
    h->hcap = cap;
    return 0;
}

static int
on_header_field(llhttp_t *p, const char *at, size_t n)
{
    pt_http_t *h = HTTP(p);

    if (h->in_trailers) {
        return trailer_add(h, n);
    }
    if (h->last_cb != 1) {
        pt_hoff_t *o;

        if (h->nhdr == h->cfg->max_headers) {
            return refuse(h, 431, NULL);
        }
        if (header_room(h) < 0) {
            return refuse(h, 500, "out of memory for the request head");
        }
        o = &h->hoff[h->nhdr++];
        o->name_off = (uint32_t)h->head.len;
        o->name_len = 0;
        o->value_off = (uint32_t)h->head.len;
        o->value_len = 0;
        h->head_bytes += 4; /* ": " and CRLF */
        h->last_cb = 1;
    }
    h->hoff[h->nhdr - 1].name_len += (uint32_t)n;
    return head_add(h, at, n);
}

static int
on_header_field_complete(llhttp_t *p)
{
    pt_http_t *h = HTTP(p);

    if (!h->in_trailers && h->nhdr > 0) {
        h->hoff[h->nhdr - 1].value_off = (uint32_t)h->head.len;
        h->last_cb = 2;
    }
    return 0;
}

static int
on_header_value(llhttp_t *p, const char *at, size_t n)
{
    pt_http_t *h = HTTP(p);

    if (h->in_trailers) {
        return trailer_add(h, n);
    }
    h->hoff[h->nhdr - 1].value_len += (uint32_t)n;
    return head_add(h, at, n);
}

static int
on_header_value_complete(llhttp_t *p)
{
    pt_http_t *h = HTTP(p);
    pt_hoff_t *o;

    if (h->in_trailers || h->nhdr == 0) {
        return 0;
    }
    /* llhttp drops leading whitespace; RFC 9110 says trailing whitespace is not part of the value either. */
    o = &h->hoff[h->nhdr - 1];
    while (o->value_len > 0) {
        char ch = h->head.data[o->value_off + o->value_len - 1];

        if (ch != ' ' && ch != '\t') {
            break;
        }
        o->value_len--;
    }
    h->last_cb = 0;
    return 0;
}

/* Splits the request-target into the path and the query, for origin-form and absolute-form. */
static void
split_target(pt_request_t *req)
{
    const char *s = req->target.base;
    const char *end = s + req->target.len;
    const char *q, *f;

    if (req->target.len > 0 && s[0] != '/' && s[0] != '*') {
        /* absolute-form "http://host:port/path?q": the path starts at the first '/' after "//". */
        const char *scheme_end = memchr(s, ':', (size_t)(end - s));

        if (scheme_end != NULL && end - scheme_end > 2 && scheme_end[1] == '/' && scheme_end[2] == '/') {
            const char *slash = memchr(scheme_end + 3, '/', (size_t)(end - scheme_end - 3));
            const char *qm = memchr(scheme_end + 3, '?', (size_t)(end - scheme_end - 3));

            if (slash == NULL || (qm != NULL && qm < slash)) {
                /* "http://host" or "http://host?q": the path is empty, RFC 9112 3.2.2 makes it "/". */
                req->path = PT_SPAN("/");
                s = qm != NULL ? qm : end;
                goto query;
            }
            s = slash;
        }
    }
    q = memchr(s, '?', (size_t)(end - s));
    f = memchr(s, '#', (size_t)(end - s));
    if (f != NULL && (q == NULL || f < q)) {
        q = NULL;
        end = f;
    }
    req->path = (pt_span_t){ s, (size_t)((q ? q : end) - s) };
    s = q ? q : end;
query:
    if (s < end && *s == '?') {
        const char *frag = memchr(s, '#', (size_t)(end - s));

        req->query = (pt_span_t){ s + 1, (size_t)((frag ? frag : end) - s - 1) };
    } else {
        req->query = (pt_span_t){ "", 0 };
    }
}

/* The header lines as spans, now that the arena no longer moves; Expect and the framing headers checked. */
static int
headers_resolve(pt_http_t *h, size_t *nhost_out)
{
    pt_request_t *req = h->req;
    size_t i, nhost = 0, nte = 0, ncl = 0, nct = 0;

    req->headers = h->hdrs;
    req->nheaders = h->nhdr;
    req->expect_continue = false;
    for (i = 0; i < h->nhdr; i++) {
        const pt_hoff_t *o = &h->hoff[i];
        pt_header_t *hd = &req->headers[i];

        hd->name = (pt_span_t){ h->head.data + o->name_off, o->name_len };
        hd->value = (pt_span_t){ h->head.data + o->value_off, o->value_len };
        if (pt_span_ieq(hd->name, "host")) {
            nhost++;
        } else if (pt_span_ieq(hd->name, "transfer-encoding")) {
            nte++;
        } else if (pt_span_ieq(hd->name, "content-length")) {
            ncl++;
        } else if (pt_span_ieq(hd->name, "content-type")) {
            nct++;
        } else if (pt_span_ieq(hd->name, "expect")) {
            if (!pt_span_ieq(hd->value, "100-continue")) {
                return refuse(h, 417, "policy: Expect other than 100-continue");
            }
            req->expect_continue = true;
        }
    }
    if (nte > 0 && ncl > 0) {
        /* RFC 9112 6.1: a request smuggling shape whatever the values (even an empty Transfer-Encoding). */
        return refuse(h, 400, "both Content-Length and Transfer-Encoding");
    }
    if (nct > 1) {
        /* RFC 9110 8.3: a singleton field; joined, the app would see "a, b", and parsers that keep the first or the
         * last one read the body two ways. */
        return refuse(h, 400, "policy: more than one Content-Type");
    }
    *nhost_out = nhost;
    return 0;
}

static int
on_headers_complete(llhttp_t *p)
{
    pt_http_t *h = HTTP(p);
    pt_request_t *req = h->req;
    size_t nhost = 0;

    h->in_trailers = true;
    if (headers_resolve(h, &nhost) < 0) {
        return -1;
    }
    req->target = (pt_span_t){ h->head.data + h->url_off, h->url_len };
    split_target(req);
    req->method.base = llhttp_method_name((llhttp_method_t)p->method);
    req->method.len = strlen(req->method.base);
    if (req->target.len == 1 && req->target.base[0] == '*' && p->method != HTTP_OPTIONS) {
        return refuse(h, 400, "policy: request-target '*' is only for OPTIONS");
    }
    if (p->http_major != 1) {
        return refuse(h, 505, "policy: only HTTP/1.x is served");
    }
    req->http_minor = p->http_minor;
    /* RFC 9112 3.2: an HTTP/1.1 request needs exactly one Host; no request may carry two. */
    if (nhost > 1) {
        return refuse(h, 400, "policy: more than one Host header");
    }
    if (nhost == 0 && req->http_minor == 1) {
        return refuse(h, 400, "policy: HTTP/1.1 request without Host");
    }
    if (req->http_minor == 0 && (p->flags & F_TRANSFER_ENCODING)) {
        /* RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty. */
        return refuse(h, 400, "policy: Transfer-Encoding in an HTTP/1.0 request");
    }
    /* No protocol upgrades: the request is answered as plain HTTP, then the connection closes, since the client
     * may already be sending the other protocol. */
    req->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade;
    req->is_head = p->method == HTTP_HEAD;
    req->chunked = (p->flags & F_CHUNKED) != 0;
    req->content_length = (p->flags & F_CONTENT_LENGTH) ? (int64_t)p->content_length : -1;
    if (p->method == HTTP_CONNECT) {
        /* Tunnels are not something a WSGI or ASGI app can serve. */
        return refuse(h, 501, "policy: CONNECT is not served");
    }
    if (req->content_length > 0 && (uint64_t)req->content_length > h->cfg->max_body_size) {
        return refuse(h, 413, NULL);
    }
    return conn_answer(h, pt_conn_on_headers(h->conn));
}

static int
on_body(llhttp_t *p, const char *at, size_t n)
{
    pt_http_t *h = HTTP(p);

    h->body_bytes += n;
    if (h->body_bytes > h->cfg->max_body_size) {
        return refuse(h, 413, NULL);
    }
    return conn_answer(h, pt_conn_on_body(h->conn, at, n));
}

static int
on_message_complete(llhttp_t *p)
{
    pt_http_t *h = HTTP(p);
    int r = pt_conn_on_message(h->conn);

    h->in_message = false;
    return r != 0 ? refuse(h, r, h->error_why) : HPE_PAUSED;
}

void
pt_http_settings_init(llhttp_settings_t *s)
{
    llhttp_settings_init(s);
    s->on_message_begin = on_message_begin;
    s->on_url = on_url;
    s->on_header_field = on_header_field;
    s->on_header_field_complete = on_header_field_complete;
    s->on_header_value = on_header_value;
    s->on_header_value_complete = on_header_value_complete;
    s->on_headers_complete = on_headers_complete;
    s->on_body = on_body;
    s->on_message_complete = on_message_complete;
}

void
pt_http_init(pt_http_t *h, const llhttp_settings_t *settings, const pt_config_t *cfg, pt_conn_t *conn,
             pt_request_t *req)
{
    llhttp_init(&h->parser, HTTP_REQUEST, settings);
    h->parser.data = h;
    h->cfg = cfg;
    h->conn = conn;
    h->req = req;
}

/*
 * llhttp 8.1 (Debian 12) takes a bare CR followed by any byte as a line end in a few places, which lets a request
 * hide inside another one's head (request smuggling when a proxy parses it differently). Every CR in a request head
 * must be followed by LF: checked here, over the head bytes only, before the parser sees them.
 * Returns -1 on a bare CR.
 */
static int
head_scan(pt_http_t *h, const char *p, size_t n)
{
    size_t i;

    for (i = 0; i < n && !h->scan_done; i++) {
        char b = p[i];

        if (h->scan_cr && b != '\n') {
            return -1;
        }
        h->scan_cr = b == '\r';
        if (b == '\r' || b == '\n') {
            if (++h->scan_m == 4 && h->scan_seen) {
                h->scan_done = true; /* CRLF CRLF after some header bytes: the head ends here */
            }
        } else {
            h->scan_m = 0;
            h->scan_seen = true;
        }
    }
    return 0;
}

pt_http_result_t
pt_http_execute(pt_http_t *h, const char *data, size_t n, size_t *used)
{
    llhttp_errno_t err;

    *used = 0;
    if (!h->scan_done && head_scan(h, data, n) < 0) {
        refuse(h, 400, "bare CR in the request head");
        return PT_HTTP_ERROR;
    }
    err = llhttp_execute(&h->parser, data, n);
    if (err == HPE_OK) {
        *used = n;
        if (!h->in_message) {
            /* Only blank lines between requests: bound them like a head. */
            h->idle_bytes += n;
            if (h->idle_bytes > h->cfg->max_header_size) {
                refuse(h, 400, "too many empty lines before a request");
                return PT_HTTP_ERROR;
            }
        }
        return PT_HTTP_MORE;
    }
    if (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) {
        if (h->error_status == 0) {
            h->error_status = 400;
        }
        return PT_HTTP_ERROR;
    }
    if (h->in_message) {
        /* HPE_PAUSED_UPGRADE without a new message: what follows an Upgrade request is not HTTP. */
        return PT_HTTP_NOT_HTTP;
    }
    /* Paused at the end of a message. */
    *used = (size_t)(llhttp_get_error_pos(&h->parser) - data);
    h->paused = true;
    h->upgrade_pause = err == HPE_PAUSED_UPGRADE;
    h->idle_bytes = 0;
    return PT_HTTP_MESSAGE;
}

int
pt_http_error(const pt_http_t *h, const char **why)
{
    const char *r;

    switch (h->error_status) {
    case 413: *why = "request body larger than --max-body-size"; return 413;
    case 431: *why = "request head larger than --max-header-size or too many header lines"; return 431;
    }
    if (h->error_why != NULL) {
        *why = h->error_why;
    } else {
        r = llhttp_get_error_reason(&h->parser);
        *why = r != NULL ? r : llhttp_errno_name(llhttp_get_errno(&h->parser));
    }
    return h->error_status ? h->error_status : 400;
}

void
pt_http_resume(pt_http_t *h)
{
    h->scan_cr = h->scan_seen = h->scan_done = false;
    h->scan_m = 0;
    h->paused = false;
    if (h->upgrade_pause) {
        llhttp_resume_after_upgrade(&h->parser);
        h->upgrade_pause = false;
    } else {
        llhttp_resume(&h->parser);
    }
}

void
pt_http_release(pt_http_t *h)
{
    pt_buf_free(&h->head);
    free(h->hoff);
    free(h->hdrs);
    h->hoff = NULL;
    h->hdrs = NULL;
    h->hcap = 0;
    h->nhdr = 0;
}
