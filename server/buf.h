/*
 * Byte spans and growable byte buffers: the two shapes in which bytes move through ponte.
 * A span points into memory someone else owns; a buffer owns its bytes.
 */
#ifndef PT_BUF_H
#define PT_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

typedef struct {
    const char *base;
    size_t len;
} pt_span_t;

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} pt_buf_t;

#define PT_SPAN(lit) ((pt_span_t){ (lit), sizeof(lit) - 1 })

/* Makes room for at least `extra` more bytes. Returns 0 or -ENOMEM. */
int pt_buf_reserve(pt_buf_t *b, size_t extra);
int pt_buf_append(pt_buf_t *b, const void *p, size_t n);
int pt_buf_printf(pt_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes, moving the rest to the front. */
void pt_buf_consume(pt_buf_t *b, size_t n);
void pt_buf_free(pt_buf_t *b);
/* Hands the bytes to the caller (who frees them) and leaves the buffer empty. */
char *pt_buf_steal(pt_buf_t *b, size_t *len);

static inline int
pt_buf_append_span(pt_buf_t *b, pt_span_t s)
{
    return pt_buf_append(b, s.base, s.len);
}

/* Appends without checking room: the caller reserved it. */
static inline void
pt_buf_put(pt_buf_t *b, const void *p, size_t n)
{
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* Whether a equals the string lit, ignoring ASCII case. Inline: with a literal, the length check is all most calls
 * do. */
static inline bool
pt_span_ieq(pt_span_t a, const char *lit)
{
    size_t n = strlen(lit);

    return a.len == n && strncasecmp(a.base, lit, n) == 0;
}
/* RFC 9110 5.6.2: tchar, a byte of a token (a method, a header name, a chunk extension): a digit, a letter or one
 * of !#$%&'*+-.^_`|~. A table of the 256 bytes (buf.c): one load a byte, checked on every header name of every
 * response (tests/unit/test_buf.c checks it against that rule). */
extern const bool pt_tchar_table[256];

static inline bool
pt_is_tchar(unsigned char c)
{
    return pt_tchar_table[c];
}
/* Decodes %XX escapes of src into dst (room for n bytes); malformed escapes are copied as they are. Returns the
 * decoded length. */
size_t pt_percent_decode(const char *src, size_t n, char *dst);
/* The next item of a `sep`-separated list (a header's "a, b;c=d"), without the spaces and tabs around it; *list
 * moves past it and its separator. Empty items come back empty. */
pt_span_t pt_span_next_item(pt_span_t *list, char sep);
/* Case-insensitive search for a comma-separated token such as "close" in a header value. */
bool pt_span_has_token(pt_span_t value, const char *token);

#endif
