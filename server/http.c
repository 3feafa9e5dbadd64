/*
 * llhttp callbacks: turn the parser's spans into a pt_request_t. Spans can arrive split across reads, so bytes are
 * appended to the connection's head arena and turned into pointers once the head is complete (the arena may move
 * while it grows). Limits are checked here, as the bytes arrive, so an oversized head is never buffered whole.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "log.h"

#define CONN(p) ((pt_conn_t *)(p)->data)

static int
head_add(pt_conn_t *c, const char *p, size_t n)
{
    c->head_bytes += n;
    if (c->head_bytes > c->srv->cfg->max_header_size) {
        c->error_status = 431;
        return -1;
    }
    if (pt_buf_append(&c->head, p, n) < 0) {
        c->error_status = 500;
        return -1;
    }
    return 0;
}

static int
on_message_begin(llhttp_t *p)
{
    pt_conn_t *c = CONN(p);

    c->head.len = 0;
    c->head_bytes = 0;
    c->nhdr = 0;
    c->last_cb = 0;
    c->url_off = c->url_len = 0;
    c->error_status = 0;
    c->error_why = NULL;
    c->state = PT_CONN_HEAD;
    /* The header timeout runs from the first byte of the request. */
    pt_conn_set_deadline(c, c->srv->cfg->header_timeout);
    return 0;
}

static int
on_url(llhttp_t *p, const char *at, size_t n)
{
    pt_conn_t *c = CONN(p);

    c->url_len += (uint32_t)n;
    return head_add(c, at, n);
}

static int
on_header_field(llhttp_t *p, const char *at, size_t n)
{
    pt_conn_t *c = CONN(p);
    struct pt_hoff_s *h;

    if (c->dispatched) {
        /* A trailer section (after a chunked body): counted against the limit, not kept. */
        c->head_bytes += n;
        return c->head_bytes > c->srv->cfg->max_header_size ? (c->error_status = 431, -1) : 0;
    }
    if (c->last_cb != 1) {
        if (c->nhdr == c->srv->cfg->max_headers) {
            c->error_status = 431;
            return -1;
        }
        if (c->nhdr == c->hcap) {
            size_t cap = c->hcap ? c->hcap * 2 : 16;
            struct pt_hoff_s *nh = realloc(c->hoff, cap * sizeof(*nh));
            pt_header_t *hd;

            if (nh == NULL) {
                c->error_status = 500;
                return -1;
            }
            c->hoff = nh;
            hd = realloc(c->hdrs, cap * sizeof(*hd));
            if (hd == NULL) {
                c->error_status = 500;
                return -1;
            }
            c->hdrs = hd;
            c->hcap = cap;
        }
        h = &c->hoff[c->nhdr++];
        h->name_off = (uint32_t)c->head.len;
        h->name_len = 0;
        h->value_off = (uint32_t)c->head.len;
        h->value_len = 0;
        c->head_bytes += 4;     /* ": " and CRLF */
        c->last_cb = 1;
    }
    c->hoff[c->nhdr - 1].name_len += (uint32_t)n;
    return head_add(c, at, n);
}

static int
on_header_field_complete(llhttp_t *p)
{
    pt_conn_t *c = CONN(p);

    if (!c->dispatched && c->nhdr > 0) {
        c->hoff[c->nhdr - 1].value_off = (uint32_t)c->head.len;
        c->last_cb = 2;
    }
    return 0;
}

static int
on_header_value(llhttp_t *p, const char *at, size_t n)
{
    pt_conn_t *c = CONN(p);

    if (c->dispatched) {
        c->head_bytes += n;
        return c->head_bytes > c->srv->cfg->max_header_size ? (c->error_status = 431, -1) : 0;
    }
    c->hoff[c->nhdr - 1].value_len += (uint32_t)n;
    return head_add(c, at, n);
}

static int
on_header_value_complete(llhttp_t *p)
{
    pt_conn_t *c = CONN(p);
    struct pt_hoff_s *h;

    if (c->dispatched || c->nhdr == 0) {
        return 0;
    }
    /* llhttp drops leading whitespace; RFC 9110 says trailing whitespace is not part of the value either. */
    h = &c->hoff[c->nhdr - 1];
    while (h->value_len > 0) {
        char ch = c->head.data[h->value_off + h->value_len - 1];

        if (ch != ' ' && ch != '\t') {
            break;
        }
        h->value_len--;
    }
    c->last_cb = 0;
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

static int
on_headers_complete(llhttp_t *p)
{
    pt_conn_t *c = CONN(p);
    pt_request_t *req = &c->req;
    const pt_config_t *cfg = c->srv->cfg;
    size_t i, nhost = 0, nte = 0, ncl = 0;

    req->headers = c->hdrs;
    req->nheaders = c->nhdr;
    req->expect_continue = false;
    for (i = 0; i < c->nhdr; i++) {
        const struct pt_hoff_s *h = &c->hoff[i];
        pt_header_t *hd = &req->headers[i];

        hd->name = (pt_span_t){ c->head.data + h->name_off, h->name_len };
        hd->value = (pt_span_t){ c->head.data + h->value_off, h->value_len };
        if (pt_span_ieq(hd->name, "host")) {
            nhost++;
        } else if (pt_span_ieq(hd->name, "transfer-encoding")) {
            nte++;
        } else if (pt_span_ieq(hd->name, "content-length")) {
            ncl++;
        } else if (pt_span_ieq(hd->name, "expect")) {
            if (pt_span_ieq(hd->value, "100-continue")) {
                req->expect_continue = true;
            } else {
                c->error_status = 417;
                c->error_why = "policy: Expect other than 100-continue";
                return -1;
            }
        }
    }
    if (nte > 0 && ncl > 0) {
        /* RFC 9112 6.1: a request smuggling shape whatever the values (even an empty Transfer-Encoding). */
        c->error_status = 400;
        c->error_why = "both Content-Length and Transfer-Encoding";
        return -1;
    }
    req->target = (pt_span_t){ c->head.data + c->url_off, c->url_len };
    split_target(req);
    req->method.base = llhttp_method_name((llhttp_method_t)p->method);
    req->method.len = strlen(req->method.base);
    if (req->target.len == 1 && req->target.base[0] == '*' && p->method != HTTP_OPTIONS) {
        c->error_status = 400;
        c->error_why = "policy: request-target '*' is only for OPTIONS";
        return -1;
    }
    if (p->http_major != 1) {
        c->error_status = 505;
        c->error_why = "policy: only HTTP/1.x is served";
        return -1;
    }
    req->http_minor = p->http_minor;
    /* RFC 9112 3.2: an HTTP/1.1 request needs exactly one Host; no request may carry two. */
    if (nhost > 1 || (nhost == 0 && req->http_minor == 1)) {
        c->error_status = 400;
        c->error_why = nhost > 1 ? "policy: more than one Host header" : "policy: HTTP/1.1 request without Host";
        return -1;
    }
    if (req->http_minor == 0 && (p->flags & F_TRANSFER_ENCODING)) {
        /* RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty. */
        c->error_status = 400;
        c->error_why = "policy: Transfer-Encoding in an HTTP/1.0 request";
        return -1;
    }
    /* No protocol upgrades over WSGI: the request is answered as plain HTTP, then the connection closes, since
     * the client may already be sending the other protocol. */
    req->keep_alive = llhttp_should_keep_alive(p) && !c->srv->stopping && !p->upgrade;
    req->is_head = p->method == HTTP_HEAD;
    req->chunked = (p->flags & F_CHUNKED) != 0;
    req->content_length = (p->flags & F_CONTENT_LENGTH) ? (int64_t)p->content_length : -1;
    if (p->method == HTTP_CONNECT) {
        /* Tunnels are not something a WSGI or ASGI app can serve. */
        c->error_status = 501;
        c->error_why = "policy: CONNECT is not served";
        return -1;
    }
    if (req->content_length > 0 && (uint64_t)req->content_length > cfg->max_body_size) {
        c->error_status = 413;
        return -1;
    }
    return pt_conn_on_headers(c);
}

static int
on_body(llhttp_t *p, const char *at, size_t n)
{
    return pt_conn_on_body(CONN(p), at, n);
}

static int
on_message_complete(llhttp_t *p)
{
    return pt_conn_on_message(CONN(p));
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
pt_http_reset(pt_conn_t *c)
{
    llhttp_init(&c->parser, HTTP_REQUEST, &c->srv->parser_settings);
    c->parser.data = c;
}

const char *
pt_http_error_reason(pt_conn_t *c, llhttp_errno_t err)
{
    const char *r = llhttp_get_error_reason(&c->parser);

    return r != NULL ? r : llhttp_errno_name(err);
}
