#include "resp.h"

#include <errno.h>
#include <string.h>
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#define SERVER_HEADER "Server: ponte\r\n"

pt_span_t
pt_http_date(void)
{
    static _Thread_local time_t cached_at = -1;
    static _Thread_local char buf[32];
    time_t now = time(NULL);

    if (now != cached_at) {
        struct tm tm;

        gmtime_r(&now, &tm);
        strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cached_at = now;
    }
    return (pt_span_t){ buf, 29 };
}

bool
pt_header_name_valid(const char *p, size_t n)
{
    size_t i;

    if (n == 0) {
        return false;
    }
    for (i = 0; i < n; i++) {
        if (!pt_is_tchar((unsigned char)p[i])) {
            return false;
        }
    }
    return true;
}

/* Whether any of the 8 bytes in w is below 0x20 or is 0x7f (exact for this question, though not for which byte). */
static inline bool
word_has_ctl(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    uint64_t del = w ^ (0x7f * ones);

    return (((w - 0x20 * ones) & ~w) | ((del - ones) & ~del)) & highs;
}

bool
pt_header_value_valid(const char *p, size_t n)
{
    size_t i = 0;

    /* Eight bytes at a time while no word holds a control byte: a response's header values are a few hundred bytes,
     * checked on every response. From a word that does (a tab is allowed), and for the tail, byte by byte. */
    for (; i + 8 <= n; i += 8) {
        uint64_t w;

        memcpy(&w, p + i, 8);
        if (word_has_ctl(w)) {
            break;
        }
    }
    for (; i < n; i++) {
        unsigned char c = (unsigned char)p[i];

        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            return false;
        }
    }
    return true;
}

bool
pt_status_bodyless(int status)
{
    return (status >= 100 && status < 200) || status == 204 || status == 304;
}

pt_span_t
pt_status_line(int status, char line[PT_STATUS_LINE_MAX])
{
    const char *reason = pt_status_reason(status);
    size_t n = strlen(reason);

    if (status < 100 || status > 999) {
        int len = snprintf(line, PT_STATUS_LINE_MAX, "%d %s", status, reason); /* at most 11 + 1 + 31 bytes */

        return (pt_span_t){ line, len > 0 ? (size_t)len : 0 };
    }
    line[0] = (char)('0' + status / 100);
    line[1] = (char)('0' + status / 10 % 10);
    line[2] = (char)('0' + status % 10);
    line[3] = ' ';
    memcpy(line + 4, reason, n); /* the longest reason is 31 bytes */
    return (pt_span_t){ line, n + 4 };
}

const char *
pt_status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 418: return "I'm a teapot";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

static size_t
u64_to_dec(char *dst, uint64_t v)
{
    char tmp[24];
    size_t n = 0, i;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (i = 0; i < n; i++) {
        dst[i] = tmp[n - 1 - i];
    }
    return n;
}

static int64_t
parse_length(pt_span_t v)
{
    int64_t n = 0;
    size_t i;

    if (v.len == 0 || v.len > 18) {
        return -1;
    }
    for (i = 0; i < v.len; i++) {
        if (v.base[i] < '0' || v.base[i] > '9') {
            return -1;
        }
        n = n * 10 + (v.base[i] - '0');
    }
    return n;
}

/* One header line: "Name: value\r\n", or for HTTP/2 "name\0value\0" with the name lower-cased. Room was reserved. */
static void
put_header(pt_buf_t *out, bool http2, pt_span_t n, pt_span_t v)
{
    size_t i;

    if (!http2) {
        pt_buf_put(out, n.base, n.len);
        pt_buf_put(out, ": ", 2);
        pt_buf_put(out, v.base, v.len);
        pt_buf_put(out, "\r\n", 2);
        return;
    }
    for (i = 0; i < n.len; i++) {
        char ch = n.base[i];

        out->data[out->len++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    out->data[out->len++] = '\0';
    pt_buf_put(out, v.base, v.len);
    out->data[out->len++] = '\0';
}

/* The app's headers, less the framing and connection ones, which are the server's business (PEP 3333 leaves
 * hop-by-hop headers to it): their meaning goes into r. HTTP/2 carries no connection-specific header at all
 * (RFC 9113 8.2.2). Room was reserved. Sets which of Date, Server it gave. */
static void
put_app_headers(pt_resp_t *r, const pt_resp_ctx_t *ctx, pt_buf_t *out, const pt_header_t *headers, size_t nheaders,
                bool *has_date, bool *has_server)
{
    size_t i;

    for (i = 0; i < nheaders; i++) {
        pt_span_t n = headers[i].name, v = headers[i].value;

        if (pt_span_ieq(n, "content-length")) {
            int64_t cl = parse_length(v);

            if (cl >= 0 && r->content_length < 0) {
                r->content_length = cl;
            }
            continue;
        }
        if (pt_span_ieq(n, "transfer-encoding")) {
            continue;
        }
        if (pt_span_ieq(n, "connection")) {
            if (pt_span_has_token(v, "close") && !ctx->http2) {
                r->must_close = true;
            }
            continue;
        }
        if (ctx->http2
            && (pt_span_ieq(n, "keep-alive") || pt_span_ieq(n, "proxy-connection") || pt_span_ieq(n, "upgrade"))) {
            continue;
        }
        if (!*has_date && pt_span_ieq(n, "date")) {
            *has_date = true;
        } else if (!*has_server && pt_span_ieq(n, "server")) {
            *has_server = true;
        }
        put_header(out, ctx->http2, n, v);
    }
}

/* How the body is framed: none (bodyless status, HEAD), a length (given or known), chunked (1.1) or close (1.0). */
static void
choose_framing(pt_resp_t *r, const pt_resp_ctx_t *ctx, int64_t known_length)
{
    if (pt_status_bodyless(r->status)) {
        r->frame = PT_FRAME_NONE;
        r->content_length = -1;
    } else if (r->content_length >= 0 || known_length >= 0) {
        if (r->content_length < 0) {
            r->content_length = known_length;
        }
        r->frame = ctx->is_head ? PT_FRAME_NONE : PT_FRAME_LENGTH;
    } else if (ctx->is_head) {
        r->frame = PT_FRAME_NONE;
    } else if (ctx->http2) {
        r->frame = PT_FRAME_STREAM;
    } else if (ctx->http_minor >= 1) {
        r->frame = PT_FRAME_CHUNKED;
    } else {
        r->frame = PT_FRAME_CLOSE;
        r->must_close = true;
    }
}

/* The framing, Date and Server (unless the app gave them) and Connection headers, and the blank line. */
static void
put_server_headers(const pt_resp_t *r, const pt_resp_ctx_t *ctx, pt_buf_t *out, bool has_date, bool has_server)
{
    char len[24];

    if (r->content_length >= 0) {
        put_header(out, ctx->http2, PT_SPAN("Content-Length"),
                   (pt_span_t){ len, u64_to_dec(len, (uint64_t)r->content_length) });
    } else if (r->frame == PT_FRAME_CHUNKED) {
        pt_buf_put(out, "Transfer-Encoding: chunked\r\n", 28);
    }
    if (!has_date) {
        put_header(out, ctx->http2, PT_SPAN("Date"), pt_http_date());
    }
    if (!has_server) {
        put_header(out, ctx->http2, PT_SPAN("Server"), PT_SPAN("ponte"));
    }
    if (ctx->http2) {
        return;
    }
    if (r->must_close) {
        pt_buf_put(out, "Connection: close\r\n", 19);
    } else if (ctx->http_minor == 0) {
        pt_buf_put(out, "Connection: keep-alive\r\n", 24);
    }
    pt_buf_put(out, "\r\n", 2);
}

int
pt_resp_head(pt_resp_t *r, const pt_resp_ctx_t *ctx, pt_buf_t *out, pt_span_t status_line, const pt_header_t *headers,
             size_t nheaders, int64_t known_length)
{
    bool has_date = false, has_server = false;
    /* The status line and the server's own lines (at most 136 bytes: a 20-digit Content-Length, Date, Server,
     * Connection, the blank line), then each of the app's lines with its ": " and CRLF. */
    size_t need = 160 + status_line.len;
    size_t before = out->len;
    size_t i;

    r->status = 0;
    for (i = 0; i < 3 && i < status_line.len; i++) {
        r->status = r->status * 10 + (status_line.base[i] - '0');
    }
    r->content_length = -1;
    r->must_close = !ctx->keep_alive && !ctx->http2;
    for (i = 0; i < nheaders; i++) {
        need += headers[i].name.len + headers[i].value.len + 4;
    }
    if (pt_buf_reserve(out, need) < 0) {
        return -ENOMEM;
    }
    if (ctx->http2) {
        uint32_t block;

        out->len += sizeof(block); /* the block's length, written once it is known */
        pt_buf_put(out, status_line.base, status_line.len < 3 ? status_line.len : 3);
        out->data[out->len++] = '\0';
    } else {
        pt_buf_put(out, ctx->http_minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ", 9);
        pt_buf_put(out, status_line.base, status_line.len);
        pt_buf_put(out, "\r\n", 2);
    }
    put_app_headers(r, ctx, out, headers, nheaders, &has_date, &has_server);
    choose_framing(r, ctx, known_length);
    put_server_headers(r, ctx, out, has_date, has_server);
    if (ctx->http2) {
        uint32_t block = (uint32_t)(out->len - before);

        memcpy(out->data + before, &block, sizeof(block));
    }
    r->head_done = true;
    r->wire_bytes += out->len - before;
    return 0;
}

int
pt_resp_body(pt_resp_t *r, pt_buf_t *out, const char *p, size_t n)
{
    size_t before = out->len;

    if (n == 0) {
        return 0;
    }
    switch (r->frame) {
    case PT_FRAME_NONE: return 0;
    case PT_FRAME_LENGTH:
        if (r->body_bytes + n > (uint64_t)r->content_length) {
            n = (size_t)((uint64_t)r->content_length - r->body_bytes);
            r->overflow = true;
        }
        if (pt_buf_append(out, p, n) < 0) {
            return -ENOMEM;
        }
        break;
    case PT_FRAME_CHUNKED: {
        char size[24];
        int sn = snprintf(size, sizeof(size), "%zx\r\n", n);

        if (pt_buf_reserve(out, (size_t)sn + n + 2) < 0) {
            return -ENOMEM;
        }
        pt_buf_put(out, size, (size_t)sn);
        pt_buf_put(out, p, n);
        pt_buf_put(out, "\r\n", 2);
        break;
    }
    case PT_FRAME_CLOSE:
    case PT_FRAME_STREAM:
        if (pt_buf_append(out, p, n) < 0) {
            return -ENOMEM;
        }
        break;
    }
    r->body_bytes += n;
    r->wire_bytes += out->len - before;
    return 0;
}

int
pt_resp_end(pt_resp_t *r, pt_buf_t *out)
{
    if (r->ended) {
        return 0;
    }
    r->ended = true;
    if (r->frame == PT_FRAME_CHUNKED) {
        if (pt_buf_append(out, "0\r\n\r\n", 5) < 0) {
            return -ENOMEM;
        }
        r->wire_bytes += 5;
    } else if (r->frame == PT_FRAME_LENGTH && r->body_bytes < (uint64_t)r->content_length) {
        /* The client is still waiting for bytes that will never come: only closing tells it. */
        r->must_close = true;
    }
    return 0;
}

int
pt_resp_error(pt_resp_t *r, const pt_resp_ctx_t *ctx, pt_buf_t *out, int status)
{
    char line[PT_STATUS_LINE_MAX];
    const char *reason = pt_status_reason(status);
    pt_header_t ct = { PT_SPAN("Content-Type"), PT_SPAN("text/plain; charset=utf-8") };
    size_t blen = strlen(reason);

    if (pt_resp_head(r, ctx, out, pt_status_line(status, line), &ct, 1, (int64_t)blen) < 0
        || pt_resp_body(r, out, reason, blen) < 0) {
        r->must_close = true;
        return -ENOMEM;
    }
    return 0;
}

int
pt_resp_simple(pt_buf_t *out, int status, bool close, const char *body)
{
    size_t blen = strlen(body);

    return pt_buf_printf(out,
                         "HTTP/1.1 %d %s\r\n"
                         "Content-Type: text/plain; charset=utf-8\r\n"
                         "Content-Length: %zu\r\n"
                         "Date: %.*s\r\n" SERVER_HEADER "%s"
                         "\r\n%s",
                         status, pt_status_reason(status), blen, 29, pt_http_date().base,
                         close ? "Connection: close\r\n" : "", body);
}
