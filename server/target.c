/*
 * The request-target (RFC 9112 3.2): origin-form "/path?query", absolute-form "http://host:port/path?query" (whose
 * authority replaces Host, RFC 9112 3.2.2), asterisk-form "*". Authority-form is CONNECT's, which is refused.
 */
#include "target.h"

#include <string.h>

/* The authority of an absolute-form target, between "//" and the path: without any userinfo ("user@"), which
 * RFC 9110 4.2.4 deprecates and which is no part of the host. */
static pt_span_t
authority_of(const char *start, const char *end)
{
    const char *at = memchr(start, '@', (size_t)(end - start));
    const char *hash = memchr(start, '#', (size_t)(end - start));

    if (hash != NULL) {
        end = hash;
    }
    if (at != NULL && at < end) {
        start = at + 1;
    }
    return (pt_span_t){ start, (size_t)(end - start) };
}

void
pt_target_split(pt_request_t *req)
{
    const char *s = req->target.base;
    const char *end = s + req->target.len;
    const char *q, *f;

    req->authority = (pt_span_t){ "", 0 };
    if (req->target.len > 0 && s[0] != '/' && s[0] != '*') {
        /* absolute-form "http://host:port/path?q": the path starts at the first '/' after "//". */
        const char *scheme_end = memchr(s, ':', (size_t)(end - s));

        if (scheme_end != NULL && end - scheme_end > 2 && scheme_end[1] == '/' && scheme_end[2] == '/') {
            const char *slash = memchr(scheme_end + 3, '/', (size_t)(end - scheme_end - 3));
            const char *qm = memchr(scheme_end + 3, '?', (size_t)(end - scheme_end - 3));

            const char *path_start = slash != NULL && (qm == NULL || slash < qm) ? slash : qm;

            req->authority = authority_of(scheme_end + 3, path_start != NULL ? path_start : end);
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
