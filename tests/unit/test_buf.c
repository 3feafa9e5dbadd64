/* Buffers, spans and --bind parsing (server/buf.c, server/listen.c). */
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "listen.h"
#include "tap.h"

static void
test_buf(void)
{
    pt_buf_t b = { 0 };
    size_t len;
    char *p;
    int i;

    for (i = 0; i < 1000; i++) {
        pt_buf_append(&b, "0123456789", 10);
    }
    CHECK(b.len == 10000 && b.cap >= 10000, "append grows");
    pt_buf_consume(&b, 9995);
    CHECK(b.len == 5 && memcmp(b.data, "56789", 5) == 0, "consume keeps the tail");
    pt_buf_printf(&b, "-%d-%s", 42, "x");
    CHECK(b.len == 10 && memcmp(b.data, "56789-42-x", 10) == 0, "printf appends");
    p = pt_buf_steal(&b, &len);
    CHECK(len == 10 && b.data == NULL && b.len == 0 && b.cap == 0, "steal empties");
    free(p);
    pt_buf_printf(&b, "%0300d", 7);
    CHECK(b.len == 300 && b.data[299] == '7', "printf larger than the initial room");
    pt_buf_free(&b);
}

static void
test_spans(void)
{
    CHECK(pt_span_ieq(PT_SPAN("Content-LENGTH"), "content-length"), "ieq ignores case");
    CHECK(!pt_span_ieq(PT_SPAN("Content-Lengthx"), "content-length"), "ieq needs equal length");
    CHECK(pt_span_has_token(PT_SPAN("keep-alive, Close"), "close"), "token in a list");
    CHECK(pt_span_has_token(PT_SPAN(" close "), "close"), "token with spaces");
    CHECK(!pt_span_has_token(PT_SPAN("closed"), "close"), "not a prefix");
    CHECK(!pt_span_has_token(PT_SPAN(""), "close"), "empty");
}

static void
test_tchar(void)
{
    static const char others[] = "!#$%&'*+-.^_`|~";
    int c, wrong = 0;

    for (c = 0; c < 256; c++) {
        bool tchar = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c != 0 && memchr(others, c, sizeof(others) - 1) != NULL);

        wrong += pt_is_tchar((unsigned char)c) != tchar;
    }
    CHECK(wrong == 0, "pt_is_tchar is RFC 9110's tchar for all 256 bytes (%d differ)", wrong);
    CHECK(pt_span_ieq(PT_SPAN("Content-Length"), "content-length")
              && !pt_span_ieq(PT_SPAN("Content-Lengt"), "content-length"),
          "pt_span_ieq ignores case, not length");
}

static void
test_percent_decode(void)
{
    char out[64];
    size_t n;

    n = pt_percent_decode("/caf%C3%A9%2Fx", 14, out);
    CHECK(n == 8 && memcmp(out, "/caf\xc3\xa9/x", 8) == 0, "escapes decoded, either case of hex digit");
    n = pt_percent_decode("100%", 4, out);
    CHECK(n == 4 && memcmp(out, "100%", 4) == 0, "a trailing %% is kept");
    n = pt_percent_decode("%zz%4", 5, out);
    CHECK(n == 5 && memcmp(out, "%zz%4", 5) == 0, "malformed escapes are copied as they are");
    n = pt_percent_decode("a%00b", 5, out);
    CHECK(n == 3 && out[1] == '\0', "%%00 becomes a NUL byte (PATH_INFO may hold any byte)");
}

static void
test_bind(void)
{
    char host[256];
    int port;
    bool is_unix;

    CHECK(pt_bind_parse("127.0.0.1:8000", host, sizeof(host), &port, &is_unix) == 0 && strcmp(host, "127.0.0.1") == 0
              && port == 8000 && !is_unix,
          "IPv4");
    CHECK(pt_bind_parse("[::1]:0", host, sizeof(host), &port, &is_unix) == 0 && strcmp(host, "::1") == 0 && port == 0,
          "IPv6 in brackets");
    CHECK(pt_bind_parse("unix:/tmp/p.sock", host, sizeof(host), &port, &is_unix) == 0 && is_unix
              && strcmp(host, "/tmp/p.sock") == 0,
          "unix socket");
    CHECK(pt_bind_parse("localhost", host, sizeof(host), &port, &is_unix) < 0, "no port");
    CHECK(pt_bind_parse("1.2.3.4:70000", host, sizeof(host), &port, &is_unix) < 0, "port out of range");
    CHECK(pt_bind_parse("1.2.3.4:80x", host, sizeof(host), &port, &is_unix) < 0, "junk after port");
    CHECK(pt_bind_parse("[::1:80", host, sizeof(host), &port, &is_unix) < 0, "unclosed bracket");
    CHECK(pt_bind_parse("unix:", host, sizeof(host), &port, &is_unix) < 0, "empty path");
}

int
main(void)
{
    test_buf();
    test_tchar();
    test_spans();
    test_percent_decode();
    test_bind();
    return tap_done();
}
