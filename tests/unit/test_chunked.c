/*
 * server/chunked.c: the chunked request body decoder, fed whole and one byte at a time.
 */
#include <stdio.h>
#include <string.h>

#include "chunked.h"
#include "tap.h"

/* Decodes `in` in pieces of `step` bytes. Returns the final result; the body goes to out (NUL-terminated). */
static pt_chunked_result_t
decode(const char *in, size_t len, size_t step, char *out, size_t *consumed, int *status)
{
    pt_chunked_t ch;
    size_t off = 0, o = 0, used;
    pt_chunked_result_t r = PT_CHUNKED_MORE;

    pt_chunked_init(&ch, 1000, 200, 4);
    while (off < len) {
        size_t n = len - off < step ? len - off : step;
        size_t at = 0;

        do {
            pt_span_t data = { 0 };

            r = pt_chunked_decode(&ch, in + off + at, n - at, &used, &data);
            if (r == PT_CHUNKED_DATA) {
                memcpy(out + o, data.base, data.len);
                o += data.len;
            }
            at += used;
        } while (r == PT_CHUNKED_DATA && at < n);
        off += at;
        if (r == PT_CHUNKED_DONE || r == PT_CHUNKED_ERROR) {
            break;
        }
    }
    out[o] = '\0';
    *consumed = off;
    *status = ch.status;
    return r;
}

static void
ok_case(const char *in, const char *body, const char *what)
{
    static const size_t steps[] = { 4096, 1, 2, 3, 7 };
    size_t i;

    for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        char out[1024];
        size_t used;
        int status;
        pt_chunked_result_t r = decode(in, strlen(in), steps[i], out, &used, &status);

        CHECK(r == PT_CHUNKED_DONE && strcmp(out, body) == 0 && used == strlen(in), "%s (in pieces of %zu): body '%s'",
              what, steps[i], out);
    }
}

static void
bad_case(const char *in, int want, const char *what)
{
    char out[1024];
    size_t used;
    int status;
    pt_chunked_result_t r = decode(in, strlen(in), 1, out, &used, &status);

    CHECK(r == PT_CHUNKED_ERROR && status == want, "%s: refused with %d (got %d)", what, want, status);
}

int
main(void)
{
    char out[64];
    size_t used;
    int status;

    ok_case("5\r\nhello\r\n0\r\n\r\n", "hello", "one chunk");
    ok_case("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", "two chunks");
    ok_case("A\r\n0123456789\r\n000\r\n\r\n", "0123456789", "hex size, last-chunk of zeros");
    ok_case("5 ;a=b\r\nhello\r\n0; x = \"y \\\" z\"\r\n\r\n", "hello", "extensions with BWS and a quoted value");
    ok_case("5;a;b=c;d\r\nhello\r\n0\r\n\r\n", "hello", "several extensions");
    ok_case("5\r\nhello\r\n0\r\nX-A: 1\r\nX-B: two words\r\n\r\n", "hello", "trailers");
    ok_case("0\r\n\r\n", "", "empty body");

    /* What follows the body is not the decoder's: it stops right after the final CRLF. */
    CHECK(decode("0\r\n\r\nGET /", 12, 12, out, &used, &status) == PT_CHUNKED_DONE && used == 5,
          "stops at the end of the body (used %zu)", used);

    bad_case("5 \r\nhello\r\n0\r\n\r\n", 400, "whitespace without an extension");
    bad_case(";a\r\n", 400, "no size");
    bad_case("x\r\n", 400, "not hex");
    bad_case("5;a=\r\n", 400, "an empty value");
    bad_case("5;=b\r\n", 400, "an empty name");
    bad_case("5;a=\"b\r\n", 400, "an unterminated quoted value");
    bad_case("5\nhello", 400, "a bare LF");
    bad_case("5\rhello", 400, "a bare CR");
    bad_case("5\r\nhelloX", 400, "data longer than its size");
    bad_case("5\r\nhello\n", 400, "data ended by a bare LF");
    bad_case("3e9\r\n", 413, "a chunk over the body limit");
    bad_case("ffffffffffffffffffff\r\n", 413, "a size that would overflow");
    bad_case("0\r\n folded: x\r\n\r\n", 400, "obs-fold in the trailers");
    bad_case("0\r\nX A: 1\r\n\r\n", 400, "a space in a trailer name");
    bad_case("0\r\nX-A: \001\r\n\r\n", 400, "a control byte in a trailer value");
    bad_case("0\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n", 431, "more trailer lines than allowed");
    bad_case("0\r\nA: 11111111111111111111111111111111111111111111111111111111111111111111111111111111111111111"
             "1111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111"
             "111111111111111111111111111\r\n\r\n",
             431, "a trailer section over its limit");
    {
        char line[PT_CHUNK_LINE_MAX + 16];

        memset(line, '0', sizeof(line));
        line[0] = '5';
        line[1] = ';';
        line[2] = 'a';
        memcpy(line + sizeof(line) - 3, "\r\n", 3);
        bad_case(line, 400, "a chunk-size line over PT_CHUNK_LINE_MAX");
    }
    return tap_done();
}
