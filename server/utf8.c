/*
 * UTF-8 as RFC 3629 defines it: no overlong forms, no surrogates (U+D800..U+DFFF), nothing above U+10FFFF. The
 * first byte of a character says how many continuation bytes follow and, for a few first bytes, a narrower range
 * for the next one (E0: A0..BF rules out overlong three-byte forms, ED: 80..9F rules out surrogates, F0 and F4 bound
 * four-byte forms); ASCII runs are skipped eight bytes at a time.
 */
#include "utf8.h"

#include <string.h>

#define ASCII_MASK 0x8080808080808080ull

/* Sets the state for the character `b` begins; false if no character begins with b. */
static bool
lead(pt_utf8_t *u, uint8_t b)
{
    u->lo = 0x80;
    u->hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
        u->need = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
        u->need = 2;
        if (b == 0xE0) {
            u->lo = 0xA0;
        } else if (b == 0xED) {
            u->hi = 0x9F;
        }
    } else if (b >= 0xF0 && b <= 0xF4) {
        u->need = 3;
        if (b == 0xF0) {
            u->lo = 0x90;
        } else if (b == 0xF4) {
            u->hi = 0x8F;
        }
    } else {
        return false; /* 80..C1 (a continuation, or an overlong two-byte form) and F5..FF */
    }
    return true;
}

bool
pt_utf8_feed(pt_utf8_t *u, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;

    while (p < end) {
        uint8_t b = *p;

        if (u->need > 0) {
            if (b < u->lo || b > u->hi) {
                return false;
            }
            u->need--;
            u->lo = 0x80;
            u->hi = 0xBF;
            p++;
            continue;
        }
        if (b < 0x80) {
            uint64_t w;

            p++;
            while (end - p >= 8) {
                memcpy(&w, p, 8);
                if (w & ASCII_MASK) {
                    break;
                }
                p += 8;
            }
            continue;
        }
        if (!lead(u, b)) {
            return false;
        }
        p++;
    }
    return true;
}

bool
pt_utf8_valid(const uint8_t *p, size_t n)
{
    pt_utf8_t u = { 0 };

    return pt_utf8_feed(&u, p, n) && pt_utf8_complete(&u);
}
