/*
 * libFuzzer target over ponte's HTTP/2 (server/h2.c and h2_stream.c, and the core under them): the fuzzer's bytes
 * are what a client sends after its preface and first SETTINGS (prior knowledge, --http 2), through fuzz_conn.c's
 * connection and C app. What the server sent back is checked:
 *
 *   - whole frames, the first of them the server's SETTINGS;
 *   - nothing after a GOAWAY that gives an error: the connection ends there;
 *   - every header block decodes (one HPACK inflater for the connection, blocks in order), with a numeric :status
 *     that is never 500: no input is the server's fault;
 *   - a stream's DATA only after its final HEADERS, and nothing on a stream after its END_STREAM or RST_STREAM;
 *   - a body the app saw, when the request had a content-length, was exactly that long;
 *   - the connection closes after the client's half-close.
 *
 * A broken invariant aborts (libFuzzer reports it as a crash); ASan and UBSan catch the rest. tests/corpus/h2 seeds
 * it: a GET, a POST with a body, a request in pieces (HEADERS and CONTINUATION), a PING and a reset.
 *
 *   build, run, replay: as fuzz_http.c (tests/fuzz/README.md); tests/fuzz/run BUILD SECONDS fuzzes both
 */
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_conn.h"
#include "h2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What the checker knows of one stream. */
typedef struct {
    uint32_t id;
    int status;    /* the final :status, or 0 */
    bool ended;    /* END_STREAM or RST_STREAM seen */
    char body[64]; /* the body's first bytes, terminated */
    size_t body_len;
} stream_t;

static stream_t streams[512];
static size_t nstreams;

static void
broken(const char *what, const char *out, size_t len)
{
    fprintf(stderr, "fuzz_h2: invariant broken: %s (%zu bytes from the server)\n", what, len);
    (void)out;
    abort();
}

static stream_t *
stream_of(uint32_t id, const char *out, size_t len)
{
    for (size_t i = 0; i < nstreams; i++) {
        if (streams[i].id == id) {
            return &streams[i];
        }
    }
    if (nstreams == sizeof(streams) / sizeof(streams[0])) {
        broken("more streams answered than the checker keeps", out, len);
    }
    streams[nstreams] = (stream_t){ .id = id };
    return &streams[nstreams++];
}

/* Decodes one header block; returns its :status (0 without one). */
static int
header_block(nghttp2_hd_inflater *inf, const uint8_t *p, size_t n, const char *out, size_t len)
{
    int status = 0;

    for (;;) {
        nghttp2_nv nv;
        int flags = 0;
        ssize_t r = nghttp2_hd_inflate_hd2(inf, &nv, &flags, p, n, 1);

        if (r < 0) {
            broken("a header block that does not decode", out, len);
        }
        p += r;
        n -= (size_t)r;
        if (flags & NGHTTP2_HD_INFLATE_EMIT) {
            if (nv.namelen == 7 && memcmp(nv.name, ":status", 7) == 0) {
                char digits[8] = { 0 };

                memcpy(digits, nv.value, nv.valuelen < 7 ? nv.valuelen : 7);
                status = atoi(digits);
                if (nv.valuelen != 3 || status < 100) {
                    broken("a :status that is not three digits", out, len);
                }
            }
        }
        if (flags & NGHTTP2_HD_INFLATE_FINAL) {
            nghttp2_hd_inflate_end_headers(inf);
            return status;
        }
        if (r == 0 && n == 0) {
            broken("a header block cut short", out, len);
        }
    }
}

/* A body the app wrote: "seq=N len=BODY cl=CONTENT-LENGTH". */
static void
check_app_body(const stream_t *s, const char *out, size_t len)
{
    unsigned seq;
    unsigned long long got;
    long long cl;

    if (s->status == 200 && sscanf(s->body, "seq=%u len=%llu cl=%lld", &seq, &got, &cl) == 3 && cl >= 0
        && got != (unsigned long long)cl) {
        broken("the app saw a body of another length than content-length said", out, len);
    }
}

static void
check_frames(const char *out, size_t len)
{
    nghttp2_hd_inflater *inf;
    uint8_t *block = NULL;
    size_t off = 0, blen = 0;
    uint32_t block_stream = 0;
    bool first = true, over = false;

    nstreams = 0;
    if (nghttp2_hd_inflate_new(&inf) != 0) {
        abort();
    }
    while (off < len) {
        const uint8_t *f = (const uint8_t *)out + off;
        size_t n;
        uint8_t type, flags;
        uint32_t id;
        stream_t *s;

        if (len - off < 9 || len - off < 9 + (n = (size_t)f[0] << 16 | (size_t)f[1] << 8 | f[2])) {
            broken("a frame cut short", out, len);
        }
        type = f[3];
        flags = f[4];
        id = ((uint32_t)f[5] << 24 | (uint32_t)f[6] << 16 | (uint32_t)f[7] << 8 | f[8]) & 0x7fffffff;
        if (first && type != NGHTTP2_SETTINGS) {
            broken("the server's first frame is not SETTINGS", out, len);
        }
        if (over) {
            broken("a frame after a GOAWAY that gave an error", out, len);
        }
        first = false;
        f += 9;
        off += 9 + n;
        switch (type) {
        case NGHTTP2_HEADERS:
        case NGHTTP2_CONTINUATION:
            block = realloc(block, blen + n);
            memcpy(block + blen, f, n);
            blen += n;
            block_stream = id;
            if (!(flags & NGHTTP2_FLAG_END_HEADERS)) {
                break;
            }
            s = stream_of(block_stream, out, len);
            if (s->ended) {
                broken("HEADERS on a stream that had ended", out, len);
            }
            if (s->status == 0 || s->status < 200) {
                s->status = header_block(inf, block, blen, out, len);
            } else {
                header_block(inf, block, blen, out, len); /* trailers */
            }
            if (s->status == 500) {
                broken("a 500: no input is the server's fault", out, len);
            }
            blen = 0;
            if (flags & NGHTTP2_FLAG_END_STREAM) {
                s->ended = true;
            }
            break;
        case NGHTTP2_DATA:
            s = stream_of(id, out, len);
            if (s->ended || s->status < 200) {
                broken("DATA before the final HEADERS, or after the stream ended", out, len);
            }
            if (s->body_len < sizeof(s->body) - 1) {
                size_t k = n < sizeof(s->body) - 1 - s->body_len ? n : sizeof(s->body) - 1 - s->body_len;

                memcpy(s->body + s->body_len, f, k);
                s->body_len += k;
            }
            if (flags & NGHTTP2_FLAG_END_STREAM) {
                s->ended = true;
                check_app_body(s, out, len);
            }
            break;
        case NGHTTP2_RST_STREAM: stream_of(id, out, len)->ended = true; break;
        case NGHTTP2_GOAWAY: over = n >= 8 && (f[4] | f[5] | f[6] | f[7]) != 0; break;
        default: break;
        }
    }
    free(block);
    nghttp2_hd_inflate_del(inf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t head[] = PT_H2_PREFACE "\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    static bool ready;
    char *out;
    size_t len;
    bool still_open;

    if (!ready) {
        char *args[] = { "fuzz", "--max-header-size", "2048",     "--max-body-size", "65536", "--max-headers",
                         "20",   "--log-level",       "critical", "--http",          "2",     "x:y",
                         NULL };

        fuzz_setup(12, args);
        ready = true;
    }
    out = fuzz_run(head, sizeof(head) - 1, data, size, &len, &still_open);
    if (still_open) {
        broken("the connection is still open after the client half-closed and everything was answered", out, len);
    }
    check_frames(out, len);
    free(out);
    return 0;
}
