/*
 * The request parser: llhttp callbacks turn the parser's spans into a pt_request_t. Spans can arrive split across
 * reads, so bytes are appended to the head arena and turned into pointers once the head is complete (the arena may
 * move while it grows). Limits are checked here, as the bytes arrive, so an oversized head is never buffered whole.
 */
#include "http.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "target.h"

#define HTTP(p) ((pt_http_t *)(p)->data)

/* Where the scan of a request line and head is (h->line): see method_scan and line_scan. */
enum {
    LINE_IDLE,   /* blank lines between requests */
    LINE_METHOD, /* the method, held back from llhttp until its end (method_scan) */
    LINE_SPACE,  /* the space after it */
    LINE_TARGET,
    LINE_VERSION, /* "HTTP/", case-sensitive (RFC 9112 2.3) */
    LINE_REST,    /* the rest of the head, until CRLF CRLF */
    LINE_DONE,
};

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
    h->in_chunked = false;
    return 0;
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

    if (h->nhdr > 0) {
        h->hoff[h->nhdr - 1].value_off = (uint32_t)h->head.len;
        h->last_cb = 2;
    }
    return 0;
}

static int
on_header_value(llhttp_t *p, const char *at, size_t n)
{
    pt_http_t *h = HTTP(p);

    h->hoff[h->nhdr - 1].value_len += (uint32_t)n;
    return head_add(h, at, n);
}

static int
on_header_value_complete(llhttp_t *p)
{
    pt_http_t *h = HTTP(p);
    pt_hoff_t *o;

    if (h->nhdr == 0) {
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

/* What the Transfer-Encoding lines said, as one list (RFC 9112 6.1). */
typedef struct {
    size_t codings, chunked;
    bool last_chunked, other;
} pt_te_t;

/* One Transfer-Encoding line: its codings counted. -1 (refused) on a malformed list. */
static int
te_check(pt_http_t *h, pt_span_t v, pt_te_t *te)
{
    const char *p = v.base, *end = v.base + v.len;

    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma != NULL ? comma : end;
        const char *semicolon;
        pt_span_t coding, name;

        while (p < e && (*p == ' ' || *p == '\t')) {
            p++;
        }
        coding = (pt_span_t){ p, (size_t)(e - p) };
        while (coding.len > 0 && (coding.base[coding.len - 1] == ' ' || coding.base[coding.len - 1] == '\t')) {
            coding.len--;
        }
        p = comma != NULL ? comma + 1 : end;
        if (coding.len == 0) {
            continue; /* an empty list element, which the list syntax allows */
        }
        te->codings++;
        name = coding;
        semicolon = memchr(coding.base, ';', coding.len);
        if (semicolon != NULL) {
            name.len = (size_t)(semicolon - coding.base);
        }
        while (name.len > 0 && (name.base[name.len - 1] == ' ' || name.base[name.len - 1] == '\t')) {
            name.len--;
        }
        te->last_chunked = pt_span_ieq(name, "chunked");
        if (te->last_chunked && semicolon != NULL) {
            return refuse(h, 400, "parameters on the chunked transfer coding");
        }
        if (te->last_chunked) {
            te->chunked++;
        } else {
            te->other = true;
        }
    }
    return 0;
}

/* The framing the codings give: chunked once and last, or 400; any other coding, which ponte cannot decode, 501. */
static int
te_verdict(pt_http_t *h, const pt_te_t *te)
{
    if (te->codings == 0) {
        return refuse(h, 400, "an empty Transfer-Encoding");
    }
    if (te->chunked > 1) {
        return refuse(h, 400, "chunked applied more than once");
    }
    if (!te->last_chunked) {
        return refuse(h, 400, "Transfer-Encoding that does not end in chunked");
    }
    if (te->other) {
        return refuse(h, 501, "policy: a transfer coding other than chunked");
    }
    return 0;
}

/* The header lines as spans, now that the arena no longer moves; Expect and the framing headers checked. */
static int
headers_resolve(pt_http_t *h, size_t *nhost_out)
{
    pt_request_t *req = h->req;
    size_t i, nhost = 0, nte = 0, ncl = 0, nct = 0;
    pt_te_t te = { 0 };

    req->headers = h->hdrs;
    req->nheaders = h->nhdr;
    req->expect_continue = false;
    for (i = 0; i < h->nhdr; i++) {
        const pt_hoff_t *o = &h->hoff[i];
        pt_header_t *hd = &req->headers[i];

        hd->name = (pt_span_t){ h->head.data + o->name_off, o->name_len };
        hd->value = (pt_span_t){ h->head.data + o->value_off, o->value_len };
        if (!pt_header_name_valid(hd->name.base, hd->name.len)) {
            /* RFC 9110 5.1: a field name is a token. llhttp 8.1 lets a space through inside some names
             * ("Transfer-Enc oding"), which another parser may read as the header it resembles. */
            return refuse(h, 400, "invalid character in a header field name");
        }
        if (pt_span_ieq(hd->name, "host")) {
            nhost++;
        } else if (pt_span_ieq(hd->name, "transfer-encoding")) {
            nte++;
            if (te_check(h, hd->value, &te) < 0) {
                return -1;
            }
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
    if (nte > 0 && te_verdict(h, &te) < 0) {
        return -1;
    }
    if (nct > 1) {
        /* RFC 9110 8.3: a singleton field; joined, the app would see "a, b", and parsers that keep the first or the
         * last one read the body two ways. */
        return refuse(h, 400, "policy: more than one Content-Type");
    }
    *nhost_out = nhost;
    return 0;
}

/*
 * An absolute-form target names the host: RFC 9112 3.2.2 says to use its authority and ignore Host, so the app
 * sees the authority as Host (WSGI HTTP_HOST, ASGI headers) whatever Host said, and an HTTP/1.0 request without a
 * Host gets one. -1 when there is no memory for the extra header line.
 */
static int
authority_as_host(pt_http_t *h)
{
    pt_request_t *req = h->req;
    size_t i;

    for (i = 0; i < req->nheaders; i++) {
        if (pt_span_ieq(req->headers[i].name, "host")) {
            req->headers[i].value = req->authority;
            return 0;
        }
    }
    if (header_room(h) < 0) {
        return -1;
    }
    req->headers = h->hdrs;
    req->headers[req->nheaders++] = (pt_header_t){ PT_SPAN("Host"), req->authority };
    h->nhdr = req->nheaders;
    return 0;
}

static int
on_headers_complete(llhttp_t *p)
{
    pt_http_t *h = HTTP(p);
    pt_request_t *req = h->req;
    size_t nhost = 0;

    h->line = LINE_DONE; /* llhttp's end of the head is the one that counts */
    if (headers_resolve(h, &nhost) < 0) {
        return -1;
    }
    req->target = (pt_span_t){ h->head.data + h->url_off, h->url_len };
    pt_target_split(req);
    req->method = (pt_span_t){ h->method, h->method_len };
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
    if (req->authority.len > 0 && authority_as_host(h) < 0) {
        return refuse(h, 500, "out of memory for the request head");
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
    if (conn_answer(h, pt_conn_on_headers(h->conn)) < 0) {
        return -1;
    }
    if (req->chunked) {
        /* ponte decodes the body (pt_http_execute): llhttp skips it and ends the message, and waits there. */
        pt_chunked_init(&h->chunked, h->cfg->max_body_size, h->cfg->max_header_size, h->cfg->max_headers);
        h->in_chunked = true;
        return 1;
    }
    return 0;
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
    int r;

    if (h->in_chunked) {
        return HPE_PAUSED; /* only the head: the body is ponte's to decode */
    }
    r = pt_conn_on_message(h->conn);

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

/* ------------------------------------------------------------------------------------------------------------ */
/* The request line and head, scanned before llhttp sees them */

/* Whether llhttp 8.1 parses this method; any other token reaches llhttp as GET. */
static bool
llhttp_knows(const char *method)
{
    static const char *const names[] = {
#define XX(num, name, string) #string,
        HTTP_METHOD_MAP(XX)
#undef XX
    };

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(names[i], method) == 0) {
            return true;
        }
    }
    return false;
}

/*
 * Blank lines, then the method. Any token is a method (RFC 9110 9.1), but llhttp 8.1 parses only the ones in its
 * table, so the method is held back here until the space after it, and llhttp is fed the method itself when it
 * knows it, GET otherwise; the request carries the real one. Returns PT_HTTP_MORE (consumed *used bytes; the
 * method is with llhttp once h->line is LINE_TARGET) or PT_HTTP_ERROR.
 */
static pt_http_result_t
method_scan(pt_http_t *h, const char *p, size_t n, size_t *used)
{
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];

        if (h->line == LINE_IDLE) {
            if (c == '\r' || c == '\n') {
                h->scan_cr = c == '\r';
                if (++h->idle_bytes > h->cfg->max_header_size) {
                    refuse(h, 400, "too many empty lines before a request");
                    *used = i;
                    return PT_HTTP_ERROR;
                }
                continue;
            }
            if (h->scan_cr) {
                refuse(h, 400, "bare CR before a request");
                *used = i;
                return PT_HTTP_ERROR;
            }
            h->line = LINE_METHOD;
            h->method_len = 0;
            pt_conn_on_message_begin(h->conn); /* the header timeout runs from the first byte */
        }
        if (pt_is_tchar(c) && h->method_len < PT_METHOD_MAX) {
            h->method[h->method_len++] = (char)c;
            continue;
        }
        *used = i;
        if (c != ' ' || h->method_len == 0) {
            refuse(h, 400, pt_is_tchar(c) ? "a request method longer than 32 bytes" : "invalid request method");
            return PT_HTTP_ERROR;
        }
        h->method[h->method_len] = '\0';
        if (llhttp_execute(&h->parser, llhttp_knows(h->method) ? h->method : "GET",
                           llhttp_knows(h->method) ? h->method_len : 3)
            != HPE_OK) {
            return PT_HTTP_ERROR;
        }
        h->line = LINE_SPACE; /* the space is llhttp's, with the rest of the line */
        return PT_HTTP_MORE;
    }
    *used = n;
    return PT_HTTP_MORE;
}

/* The index of the first CR or LF in p[i..n), or n. */
static size_t
line_end(const char *p, size_t i, size_t n)
{
    const char *cr = memchr(p + i, '\r', n - i);
    size_t end = cr != NULL ? (size_t)(cr - p) : n;
    const char *lf = memchr(p + i, '\n', end - i);

    return lf != NULL ? (size_t)(lf - p) : end;
}

/* The index of the first space, CR or LF in p[i..n), or n. */
static size_t
target_end(const char *p, size_t i, size_t n)
{
    while (i < n && p[i] != ' ' && p[i] != '\r' && p[i] != '\n') {
        i++;
    }
    return i;
}

/*
 * The rest of the head, before llhttp parses it: the protocol must be "HTTP/" (llhttp 8.1 takes ICE/1.0 and
 * RTSP/1.0 too), and every CR must be followed by LF (llhttp 8.1 takes a bare CR followed by any byte as a line
 * end in a few places, which lets a request hide inside another one's head). Returns -1 on either.
 */
static int
line_scan(pt_http_t *h, const char *p, size_t n)
{
    size_t i;

    for (i = 0; i < n && h->line != LINE_DONE; i++) {
        char b = p[i];

        if (h->scan_cr && b != '\n') {
            return refuse(h, 400, "bare CR in the request head");
        }
        if (b == '\n' && !h->scan_cr) {
            /* RFC 9112 2.2 lets a recipient take a bare LF as a line end; ponte does not, since a proxy in front
             * that does not either reads another head out of the same bytes. */
            return refuse(h, 400, "bare LF in the request head");
        }
        h->scan_cr = b == '\r';
        if (h->line == LINE_SPACE) {
            h->line = LINE_TARGET; /* the space after the method */
            continue;
        }
        if (h->line == LINE_TARGET) {
            h->line = b == ' ' ? LINE_VERSION : b == '\r' || b == '\n' ? LINE_REST : LINE_TARGET;
            h->version_pos = 0;
            if (h->line == LINE_TARGET) {
                i = target_end(p, i + 1, n) - 1; /* the bytes up to the next space or line end change nothing */
            }
            continue;
        }
        if (h->line == LINE_VERSION) {
            if (b != "HTTP/"[h->version_pos]) {
                return refuse(h, 400, "not an HTTP request line (the protocol must be HTTP/1.x, in capitals)");
            }
            if (++h->version_pos == 5) {
                h->line = LINE_REST;
            }
            continue;
        }
        if (b == '\r' || b == '\n') {
            if (++h->scan_m == 4) {
                h->line = LINE_DONE; /* CRLF CRLF: the head ends here */
            }
            continue;
        }
        if (h->scan_m == 2 && (b == ' ' || b == '\t')) {
            /* obs-fold (RFC 9112 5.2): refused rather than unfolded, since a proxy that took the folded line for a
             * header of its own would frame the body another way. */
            return refuse(h, 400, "obs-fold (a header line that starts with whitespace)");
        }
        h->scan_m = 0;
        i = line_end(p, i + 1, n) - 1; /* the bytes up to the next CR or LF change nothing */
    }
    return 0;
}

/* The message ended (llhttp's on_message_complete, or the chunked body's end): paused there until resumed. */
static pt_http_result_t
message_end(pt_http_t *h, llhttp_errno_t err)
{
    h->paused = true;
    h->upgrade_pause = err == HPE_PAUSED_UPGRADE;
    h->idle_bytes = 0;
    return PT_HTTP_MESSAGE;
}

/* A chunked body, decoded by chunked.c; its data goes to the connection as llhttp's on_body would. */
static pt_http_result_t
chunked_body(pt_http_t *h, const char *p, size_t n, size_t *used)
{
    size_t off = 0, k;
    pt_span_t data;
    int status;

    while (off < n) {
        switch (pt_chunked_decode(&h->chunked, p + off, n - off, &k, &data)) {
        case PT_CHUNKED_DATA:
            off += k;
            h->body_bytes += data.len;
            status = pt_conn_on_body(h->conn, data.base, data.len);
            if (status != 0) {
                refuse(h, status, h->error_why);
                *used = off;
                return PT_HTTP_ERROR;
            }
            break;
        case PT_CHUNKED_DONE:
            *used = off + k;
            h->in_chunked = false;
            h->in_message = false;
            status = pt_conn_on_message(h->conn);
            if (status != 0) {
                refuse(h, status, h->error_why);
                return PT_HTTP_ERROR;
            }
            return message_end(h, h->upgrade_pause ? HPE_PAUSED_UPGRADE : HPE_PAUSED);
        case PT_CHUNKED_ERROR:
            refuse(h, h->chunked.status, h->chunked.why);
            *used = off + k;
            return PT_HTTP_ERROR;
        case PT_CHUNKED_MORE: off = n; break;
        }
    }
    *used = n;
    return PT_HTTP_MORE;
}

/* The head (after the method) and a Content-Length body: llhttp's. */
static pt_http_result_t
llhttp_part(pt_http_t *h, const char *p, size_t n, size_t *used)
{
    llhttp_errno_t err;

    *used = n;
    if (h->line != LINE_DONE && line_scan(h, p, n) < 0) {
        return PT_HTTP_ERROR;
    }
    err = llhttp_execute(&h->parser, p, n);
    if (err == HPE_OK) {
        return PT_HTTP_MORE;
    }
    if (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) {
        if (h->error_status == 0) {
            h->error_status = 400;
        }
        return PT_HTTP_ERROR;
    }
    *used = (size_t)(llhttp_get_error_pos(&h->parser) - p);
    if (h->in_chunked) {
        h->upgrade_pause = err == HPE_PAUSED_UPGRADE;
        return PT_HTTP_MORE; /* the head of a chunked request: its body is next */
    }
    if (h->in_message) {
        /* HPE_PAUSED_UPGRADE without a new message: what follows an Upgrade request is not HTTP. */
        return PT_HTTP_NOT_HTTP;
    }
    return message_end(h, err);
}

pt_http_result_t
pt_http_execute(pt_http_t *h, const char *data, size_t n, size_t *used)
{
    size_t off = 0, k;
    pt_http_result_t r;

    while (off < n) {
        uint8_t line = h->line;
        bool chunked = h->in_chunked;

        if (h->in_chunked) {
            r = chunked_body(h, data + off, n - off, &k);
        } else if (h->line <= LINE_METHOD) {
            r = method_scan(h, data + off, n - off, &k);
        } else {
            r = llhttp_part(h, data + off, n - off, &k);
        }
        off += k;
        if (r != PT_HTTP_MORE) {
            *used = off;
            return r;
        }
        if (k == 0 && h->line == line && h->in_chunked == chunked) {
            /* A step that consumed nothing must have moved the scan on, or the loop thread would spin: refused
             * rather than hung, should a step ever stand still. */
            refuse(h, 500, "the parser made no progress");
            *used = off;
            return PT_HTTP_ERROR;
        }
    }
    *used = n;
    return PT_HTTP_MORE;
}

int
pt_http_error(const pt_http_t *h, const char **why)
{
    const char *r;

    if (h->error_why == NULL && h->error_status == 413) {
        *why = "request body larger than --max-body-size";
    } else if (h->error_why == NULL && h->error_status == 431) {
        *why = "request head larger than --max-header-size or too many header lines";
    } else if (h->error_why != NULL) {
        *why = h->error_why;
    } else {
        r = llhttp_get_error_reason(&h->parser);
        *why = r != NULL ? r : llhttp_errno_name(llhttp_get_errno(&h->parser));
    }
    return h->error_status ? h->error_status : 400;
}

bool
pt_http_is_head(const pt_http_t *h)
{
    return h->line == LINE_DONE && h->parser.method == HTTP_HEAD;
}

void
pt_http_resume(pt_http_t *h)
{
    h->line = LINE_IDLE;
    h->scan_cr = false;
    h->scan_m = 0;
    h->in_chunked = false;
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
