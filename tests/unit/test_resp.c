/* Response framing (server/resp.c): status line, headers, Content-Length vs chunked vs close-delimited, HEAD. */
#include <stdlib.h>
#include <string.h>

#include "resp.h"
#include "tap.h"

static pt_header_t ct = { PT_SPAN("Content-Type"), PT_SPAN("text/plain") };

static char *
cut_date(pt_buf_t *b)
{
    /* Drop the Date line (it changes every second) so the rest can be compared exactly. */
    char *s = strndup(b->data, b->len);
    char *d = strstr(s, "Date: ");

    if (d != NULL) {
        char *end = strstr(d, "\r\n");

        memmove(d, end + 2, strlen(end + 2) + 1);
    }
    return s;
}

static void
test_known_length(void)
{
    pt_resp_t r = { 0 };
    pt_resp_ctx_t ctx = { 1, false, true, false };
    pt_buf_t b = { 0 };
    char *s;

    pt_resp_head(&r, &ctx, &b, PT_SPAN("200 OK"), &ct, 1, 5);
    pt_resp_body(&r, &b, "hello", 5);
    pt_resp_end(&r, &b);
    s = cut_date(&b);
    CHECK(strcmp(s, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nServer: ponte\r\n\r\nhello")
              == 0,
          "known length becomes Content-Length");
    CHECK(r.status == 200 && r.frame == PT_FRAME_LENGTH && !r.must_close, "status and framing recorded");
    CHECK(r.wire_bytes == b.len, "wire_bytes counts every byte (%llu vs %zu)", (unsigned long long)r.wire_bytes, b.len);
    free(s);
    pt_buf_free(&b);
}

static void
test_chunked(void)
{
    pt_resp_t r = { 0 };
    pt_resp_ctx_t ctx = { 1, false, true, false };
    pt_buf_t b = { 0 };
    char *s, *body;

    pt_resp_head(&r, &ctx, &b, PT_SPAN("200 OK"), &ct, 1, -1);
    pt_resp_body(&r, &b, "hello", 5);
    pt_resp_body(&r, &b, "", 0);
    pt_resp_body(&r, &b, "0123456789abcdefX", 17);
    pt_resp_end(&r, &b);
    s = cut_date(&b);
    CHECK(strstr(s, "Transfer-Encoding: chunked\r\n") != NULL, "HTTP/1.1 without length is chunked");
    body = strstr(s, "\r\n\r\n") + 4;
    CHECK(strcmp(body, "5\r\nhello\r\n11\r\n0123456789abcdefX\r\n0\r\n\r\n") == 0, "chunks framed in hex");
    CHECK(r.body_bytes == 22, "body_bytes counts payload only");
    free(s);
    pt_buf_free(&b);
}

static void
test_http10_close_delimited(void)
{
    pt_resp_t r = { 0 };
    pt_resp_ctx_t ctx = { 0, false, true, false };
    pt_buf_t b = { 0 };
    char *s;

    pt_resp_head(&r, &ctx, &b, PT_SPAN("200 OK"), &ct, 1, -1);
    pt_resp_body(&r, &b, "abc", 3);
    pt_resp_end(&r, &b);
    s = cut_date(&b);
    CHECK(strncmp(s, "HTTP/1.0 200 OK\r\n", 17) == 0, "HTTP/1.0 status line");
    CHECK(r.frame == PT_FRAME_CLOSE && r.must_close, "1.0 without length is close-delimited");
    CHECK(strstr(s, "Connection: close\r\n") != NULL && strstr(s, "chunked") == NULL, "no chunking for 1.0");
    CHECK(strcmp(strstr(s, "\r\n\r\n") + 4, "abc") == 0, "raw body");
    free(s);
    pt_buf_free(&b);
}

static void
test_http10_keep_alive(void)
{
    pt_resp_t r = { 0 };
    pt_resp_ctx_t ctx = { 0, false, true, false };
    pt_buf_t b = { 0 };

    pt_resp_head(&r, &ctx, &b, PT_SPAN("200 OK"), &ct, 1, 3);
    CHECK(memmem(b.data, b.len, "Connection: keep-alive\r\n", 24) != NULL, "1.0 keep-alive is announced");
    CHECK(!r.must_close, "and kept");
    pt_buf_free(&b);
}

static void
test_head_and_bodyless(void)
{
    pt_resp_t r = { 0 };
    pt_resp_ctx_t head = { 1, true, true, false }, get = { 1, false, true, false };
    pt_buf_t b = { 0 };
    size_t len;

    pt_resp_head(&r, &head, &b, PT_SPAN("200 OK"), &ct, 1, 1000);
    len = b.len;
    pt_resp_body(&r, &b, "abc", 3);
    pt_resp_end(&r, &b);
    CHECK(b.len == len, "HEAD: body suppressed");
    CHECK(memmem(b.data, b.len, "Content-Length: 1000\r\n", 22) != NULL, "HEAD keeps the GET Content-Length");

    memset(&r, 0, sizeof(r));
    b.len = 0;
    pt_resp_head(&r, &get, &b, PT_SPAN("304 Not Modified"), NULL, 0, -1);
    len = b.len;
    pt_resp_body(&r, &b, "abc", 3);
    pt_resp_end(&r, &b);
    CHECK(b.len == len && r.frame == PT_FRAME_NONE, "304: no body, no framing");
    CHECK(memmem(b.data, b.len, "chunked", 7) == NULL && memmem(b.data, b.len, "Content-Length", 14) == NULL,
          "304: neither header");
    pt_buf_free(&b);
}

static void
test_app_headers(void)
{
    pt_resp_t r = { 0 };
    pt_resp_ctx_t ctx = { 1, false, true, false };
    pt_buf_t b = { 0 };
    pt_header_t h[] = {
        { PT_SPAN("content-length"), PT_SPAN("3") }, { PT_SPAN("Transfer-Encoding"), PT_SPAN("chunked") },
        { PT_SPAN("Connection"), PT_SPAN("close") }, { PT_SPAN("Server"), PT_SPAN("mine") },
        { PT_SPAN("Date"), PT_SPAN("yesterday") },   { PT_SPAN("Set-Cookie"), PT_SPAN("a=1") },
        { PT_SPAN("Set-Cookie"), PT_SPAN("b=2") },
    };
    char *s;

    pt_resp_head(&r, &ctx, &b, PT_SPAN("201 Created"), h, 7, -1);
    s = strndup(b.data, b.len);
    CHECK(r.content_length == 3 && r.frame == PT_FRAME_LENGTH, "app Content-Length honoured");
    CHECK(strstr(s, "Transfer-Encoding") == NULL, "app Transfer-Encoding dropped (framing is the server's)");
    CHECK(r.must_close && strstr(s, "Connection: close\r\n") != NULL, "app Connection: close honoured once");
    CHECK(strstr(s, "Server: mine\r\n") != NULL && strstr(s, "Server: ponte") == NULL,
          "app Server kept, ours not added");
    CHECK(strstr(s, "Date: yesterday\r\n") != NULL && strstr(s, "GMT") == NULL, "app Date kept");
    CHECK(strstr(s, "Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n") != NULL, "repeated headers kept in order");
    free(s);

    b.len = 0;
    pt_resp_body(&r, &b, "abcdef", 6);
    CHECK(b.len == 3 && r.overflow, "bytes past Content-Length dropped and flagged");
    pt_buf_free(&b);
}

static void
test_short_body_forces_close(void)
{
    pt_resp_t r = { 0 };
    pt_resp_ctx_t ctx = { 1, false, true, false };
    pt_buf_t b = { 0 };
    pt_header_t h = { PT_SPAN("Content-Length"), PT_SPAN("10") };

    pt_resp_head(&r, &ctx, &b, PT_SPAN("200 OK"), &h, 1, -1);
    pt_resp_body(&r, &b, "abc", 3);
    pt_resp_end(&r, &b);
    CHECK(r.must_close, "a body shorter than its Content-Length closes the connection");
    pt_buf_free(&b);
}

static void
test_simple(void)
{
    pt_buf_t b = { 0 };

    pt_resp_simple(&b, 431, true, "too big");
    CHECK(memmem(b.data, b.len, "HTTP/1.1 431 Request Header Fields Too Large\r\n", 46) != NULL, "431 status line");
    CHECK(memmem(b.data, b.len, "Content-Length: 7\r\n", 19) != NULL, "length of the body");
    CHECK(memmem(b.data, b.len, "Connection: close\r\n", 19) != NULL, "closes");
    CHECK(b.len > 7 && memcmp(b.data + b.len - 11, "\r\n\r\ntoo big", 11) == 0, "body last");
    pt_buf_free(&b);
}

static void
test_header_rules(void)
{
    CHECK(pt_header_name_valid("X-Custom_1.a~", 13), "a token is a valid name");
    CHECK(!pt_header_name_valid("", 0), "an empty name is not");
    CHECK(!pt_header_name_valid("Bad Name", 8) && !pt_header_name_valid("a:b", 3) && !pt_header_name_valid("a\0", 2),
          "space, colon, NUL are not token characters");
    CHECK(pt_header_value_valid("text/plain; q=1\t\xe9", 17), "HTAB and obs-text are allowed in values");
    CHECK(!pt_header_value_valid("a\r\nInjected: 1", 15) && !pt_header_value_valid("a\nb", 3)
              && !pt_header_value_valid("a\x7f", 2),
          "CR, LF, DEL are not");

    /* Values are checked eight bytes at a time: every byte value, at every place in values of 1 to 24 bytes
     * (whole words, a tail, both), against the rule byte by byte. Around it: 'a', or 0xff (obs-text, next to which
     * a subtraction could borrow), or a tab. */
    int wrong = 0;
    for (int fill = 0; fill < 3; fill++) {
        for (size_t n = 1; n <= 24; n++) {
            for (size_t at = 0; at < n; at++) {
                for (int c = 0; c < 256; c++) {
                    char v[24];
                    bool want = !((c < 0x20 && c != '\t') || c == 0x7f);

                    memset(v, fill == 0 ? 'a' : fill == 1 ? '\xff' : '\t', sizeof(v));
                    v[at] = (char)c;
                    wrong += pt_header_value_valid(v, n) != want;
                }
            }
        }
    }
    CHECK(wrong == 0, "every byte at every place of 1..24-byte values is judged as byte by byte (%d wrong)", wrong);
}

static void
test_status_line(void)
{
    char line[PT_STATUS_LINE_MAX];
    pt_span_t s = pt_status_line(200, line);

    CHECK(s.len == 6 && memcmp(s.base, "200 OK", 6) == 0, "200: %.*s", (int)s.len, s.base);
    s = pt_status_line(431, line);
    CHECK(s.len == 35 && memcmp(s.base, "431 Request Header Fields Too Large", 35) == 0, "the longest reason: %.*s",
          (int)s.len, s.base);
    s = pt_status_line(799, line);
    CHECK(s.len == 11 && memcmp(s.base, "799 Unknown", 11) == 0, "a status with no reason: %.*s", (int)s.len, s.base);
    s = pt_status_line(1000, line);
    CHECK(s.len == 12 && memcmp(s.base, "1000 Unknown", 12) == 0, "outside 100-999: %.*s", (int)s.len, s.base);
}

static void
test_date(void)
{
    pt_span_t d = pt_http_date();

    CHECK(d.len == 29 && memcmp(d.base + 26, "GMT", 3) == 0, "IMF-fixdate: %.*s", (int)d.len, d.base);
}

/* The HTTP/2 head block as "name=value;..." (Date's value as DATE: it changes), and its length, which it says. */
static char *
h2_block(const pt_buf_t *b, size_t *block_len)
{
    uint32_t n;
    char *out = calloc(1, b->len * 2 + 16), *o = out;
    const char *p, *end, *name = NULL;

    memcpy(&n, b->data, sizeof(n));
    *block_len = n;
    p = b->data + sizeof(n);
    end = b->data + n;
    o += sprintf(o, ":status=%s;", p);
    for (p += strlen(p) + 1; p < end; p += strlen(p) + 1) {
        if (name == NULL) {
            name = p;
            o += sprintf(o, "%s=", p);
        } else {
            o += sprintf(o, "%s;", strcmp(name, "date") == 0 ? "DATE" : p);
            name = NULL;
        }
    }
    return out;
}

static void
test_http2_head_block(void)
{
    pt_resp_t r = { 0 };
    pt_resp_ctx_t ctx = { 1, false, true, true };
    pt_header_t h[] = {
        { PT_SPAN("X-Mixed-Case"), PT_SPAN("Value Kept") },
        { PT_SPAN("Connection"), PT_SPAN("close") },
        { PT_SPAN("Keep-Alive"), PT_SPAN("5") },
        { PT_SPAN("Transfer-Encoding"), PT_SPAN("chunked") },
        { PT_SPAN("Upgrade"), PT_SPAN("h2c") },
        { PT_SPAN("Date"), PT_SPAN("Tue, 1 Dec 2026") },
    };
    pt_buf_t b = { 0 };
    size_t block;
    char *s;

    pt_resp_head(&r, &ctx, &b, PT_SPAN("201 Created"), h, 6, -1);
    s = h2_block(&b, &block);
    CHECK(block == b.len, "the block's length is what was written (%zu vs %zu)", block, b.len);
    CHECK(strcmp(s, ":status=201;x-mixed-case=Value Kept;date=DATE;server=ponte;") == 0,
          "names lower-cased, connection-specific fields dropped, no Connection of the server's: %s", s);
    CHECK(r.frame == PT_FRAME_STREAM && !r.must_close, "no length: the stream's end ends the body");
    pt_resp_body(&r, &b, "hello", 5);
    pt_resp_end(&r, &b);
    CHECK(b.len == block + 5 && memcmp(b.data + block, "hello", 5) == 0, "the body follows as is, not chunked");
    free(s);
    pt_buf_free(&b);

    memset(&r, 0, sizeof(r));
    pt_resp_head(&r, &ctx, &b, PT_SPAN("200 OK"), &ct, 1, 5);
    s = h2_block(&b, &block);
    CHECK(strcmp(s, ":status=200;content-type=text/plain;content-length=5;date=DATE;server=ponte;") == 0,
          "a known length is content-length: %s", s);
    pt_resp_body(&r, &b, "hel", 3);
    pt_resp_end(&r, &b);
    CHECK(r.must_close, "a body short of its length cannot end the stream cleanly");
    free(s);
    pt_buf_free(&b);

    ctx.is_head = true;
    memset(&r, 0, sizeof(r));
    pt_resp_head(&r, &ctx, &b, PT_SPAN("200 OK"), &ct, 1, 5);
    pt_resp_body(&r, &b, "hello", 5);
    free(h2_block(&b, &block));
    CHECK(r.frame == PT_FRAME_NONE && b.len == block, "HEAD: the length said, no body");
    pt_buf_free(&b);
}

int
main(void)
{
    test_known_length();
    test_chunked();
    test_http10_close_delimited();
    test_http10_keep_alive();
    test_head_and_bodyless();
    test_app_headers();
    test_short_body_forces_close();
    test_simple();
    test_header_rules();
    test_status_line();
    test_date();
    test_http2_head_block();
    return tap_done();
}
