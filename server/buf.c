#include "buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

const bool pt_tchar_table[256] = {
    ['0' ... '9'] = true, ['A' ... 'Z'] = true, ['a' ... 'z'] = true, ['!'] = true, ['#'] = true, ['$'] = true,
    ['%'] = true,         ['&'] = true,         ['\''] = true,        ['*'] = true, ['+'] = true, ['-'] = true,
    ['.'] = true,         ['^'] = true,         ['_'] = true,         ['`'] = true, ['|'] = true, ['~'] = true,
};

int
pt_buf_reserve(pt_buf_t *b, size_t extra)
{
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    char *p;

    if (need <= b->cap) {
        return 0;
    }
    while (cap < need) {
        cap *= 2;
    }
    p = realloc(b->data, cap);
    if (p == NULL) {
        return -ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int
pt_buf_append(pt_buf_t *b, const void *p, size_t n)
{
    int r = pt_buf_reserve(b, n);

    if (r == 0 && n > 0) {
        pt_buf_put(b, p, n);
    }
    return r;
}

int
pt_buf_printf(pt_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        size_t room = b->cap - b->len;

        va_start(ap, fmt);
        n = vsnprintf(b->data ? b->data + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            return -EINVAL;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return 0;
        }
        if (pt_buf_reserve(b, (size_t)n + 1) < 0) {
            return -ENOMEM;
        }
    }
}

void
pt_buf_consume(pt_buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void
pt_buf_free(pt_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *
pt_buf_steal(pt_buf_t *b, size_t *len)
{
    char *p = b->data;

    *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

pt_span_t
pt_span_next_item(pt_span_t *list, char sep)
{
    const char *hit = memchr(list->base, sep, list->len);
    size_t n = hit ? (size_t)(hit - list->base) : list->len;
    pt_span_t item = { list->base, n };

    list->base += hit ? n + 1 : n;
    list->len -= hit ? n + 1 : n;
    while (item.len > 0 && (item.base[0] == ' ' || item.base[0] == '\t')) {
        item.base++;
        item.len--;
    }
    while (item.len > 0 && (item.base[item.len - 1] == ' ' || item.base[item.len - 1] == '\t')) {
        item.len--;
    }
    return item;
}

bool
pt_span_has_token(pt_span_t v, const char *token)
{
    size_t n = strlen(token);

    while (v.len > 0) {
        pt_span_t item = pt_span_next_item(&v, ',');

        if (item.len == n && n > 0 && strncasecmp(item.base, token, n) == 0) {
            return true;
        }
    }
    return false;
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

size_t
pt_percent_decode(const char *src, size_t n, char *dst)
{
    size_t i, k = 0;

    for (i = 0; i < n; i++) {
        int hi, lo;

        if (src[i] == '%' && i + 2 < n && (hi = hexval(src[i + 1])) >= 0 && (lo = hexval(src[i + 2])) >= 0) {
            dst[k++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            dst[k++] = src[i];
        }
    }
    return k;
}
