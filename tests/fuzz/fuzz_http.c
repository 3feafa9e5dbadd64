/*
 * libFuzzer target over the whole HTTP core (server/, no Python): the fuzzer's bytes go to a real connection
 * (conn.c, http.c, chunked.c, request.c, out.c) over a socketpair, split into reads at points the input chooses,
 * then the client half-closes. A C app on the loop thread answers every request with what it saw, either with
 * the whole body in hand (WSGI --threads 0) or streaming it (ASGI). The responses are then checked:
 *
 *   - every response is complete: a status line, headers, and exactly Content-Length bytes of body;
 *   - the app's responses come in request order, numbered 1, 2, 3... with no gap;
 *   - a body framed by Content-Length reached the app whole, no more and no less;
 *   - after an error the server answered itself (4xx, 501, 505), nothing more is sent; and never a 500;
 *   - the connection closes after the half-close: no request is left hanging.
 *
 * A broken invariant aborts, which libFuzzer reports like a crash; ASan and UBSan catch the rest. A hash of the
 * input chooses the app mode and the read splits, so that any HTTP bytes are an input (tests/corpus seeds it) and
 * a failing input fails the same way every time.
 *
 *   build:  CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false
 *   run:    tests/fuzz/run build-fuzz 60         (what the suite does; tests/fuzz/README.md says more)
 *   replay: build/tests/fuzz/fuzz_replay FILE... (the suite replays tests/fuzz/regressions/ in every build)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_conn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the invariants ---- */

static void
broken(const char *what, const char *out, size_t len)
{
    fprintf(stderr, "fuzz_http: invariant broken: %s\nresponses (%zu bytes):\n%.*s\n", what, len,
            (int)(len > 2000 ? 2000 : len), out);
    abort();
}

/* Checks the byte stream the server sent back. */
static void
check_responses(const char *out, size_t len)
{
    size_t off = 0;
    unsigned expect = 1;
    bool ended = false;

    while (off < len) {
        const char *head_end = memmem(out + off, len - off, "\r\n\r\n", 4);
        const char *cl;
        long long clen = 0;
        int status;
        bool head;

        if (ended) {
            broken("a response after the server's own error response", out, len);
        }
        if (head_end == NULL || len - off < 12 || memcmp(out + off, "HTTP/1.", 7) != 0) {
            broken("an incomplete or malformed response head", out, len);
        }
        status = atoi(out + off + 9);
        cl = memmem(out + off, (size_t)(head_end - (out + off)), "\r\nContent-Length: ", 18);
        if (cl != NULL) {
            clen = atoll(cl + 18);
        } else if (status != 100) {
            broken("a response without Content-Length", out, len);
        }
        head = memmem(out + off, (size_t)(head_end - (out + off)), "\r\nX-Head: 1", 11) != NULL;
        if (head) {
            clen = 0;
        }
        off = (size_t)(head_end - out) + 4;
        if ((size_t)clen > len - off) {
            broken("a response body cut short", out, len);
        }
        if (status == 200 && head) {
            expect++; /* the seq is in the body a HEAD response does not have */
        } else if (status == 200) {
            unsigned s = 0;
            unsigned long long body_len = 0;
            long long declared = -1;
            char body[64]; /* the body alone, terminated: sscanf must not read on into what follows it */
            size_t n = (size_t)clen < sizeof(body) - 1 ? (size_t)clen : sizeof(body) - 1;

            memcpy(body, out + off, n);
            body[n] = '\0';
            if (sscanf(body, "seq=%u len=%llu cl=%lld", &s, &body_len, &declared) != 3 || s != expect) {
                broken("responses out of order, or one missing", out, len);
            }
            if (declared >= 0 && body_len != (unsigned long long)declared) {
                broken("the app saw a body of another length than Content-Length said", out, len);
            }
            expect++;
        } else if (status >= 500 && status != 501 && status != 505) {
            broken("an internal error: no input is the server's fault", out, len);
        } else if (status >= 400) {
            ended = true;
        }
        off += (size_t)clen;
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    char *out;
    size_t len;
    bool still_open;

    if (!ready) {
        /* HTTP/1.x only: a preface would start HTTP/2, which fuzz_h2.c fuzzes. */
        char *args[] = { "fuzz", "--max-header-size", "2048",     "--max-body-size", "65536", "--max-headers",
                         "20",   "--log-level",       "critical", "--http",          "1",     "x:y",
                         NULL };

        fuzz_setup(12, args);
        ready = true;
    }
    out = fuzz_run(NULL, 0, data, size, &len, &still_open);
    if (still_open) {
        broken("the connection is still open after the client half-closed and everything was answered", out, len);
    }
    check_responses(out, len);
    free(out);
    return 0;
}
