/*
 * UTF-8 validation, incremental: a text message is checked as its bytes arrive, across frames and reads, so that a
 * bad byte is refused where it is, not once the message is whole (RFC 6455 8.1, RFC 3629 4).
 */
#ifndef PT_UTF8_H
#define PT_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t need;   /* continuation bytes still owed by the current character */
    uint8_t lo, hi; /* the range the next continuation byte must be in */
} pt_utf8_t;

/* Checks n more bytes. false at the first byte that cannot be part of valid UTF-8 (the state is then spent). */
bool pt_utf8_feed(pt_utf8_t *u, const uint8_t *p, size_t n);
/* Whether the bytes so far end on a character boundary (a complete message must). */
static inline bool
pt_utf8_complete(const pt_utf8_t *u)
{
    return u->need == 0;
}
/* Both at once, for a whole string. */
bool pt_utf8_valid(const uint8_t *p, size_t n);

#endif
