/*
 * server/utf8.c against a reference written the other way round: every code point from 0 to U+10FFFF is encoded,
 * and every byte string of one to four bytes in the ranges that matter is judged by decoding it and checking the
 * result. Also: the same bytes fed in every split, and checks that stop at the first bad byte.
 */
#include <stdint.h>
#include <stdio.h>

#include "tap.h"
#include "utf8.h"

/* Reference: whether b[0..n) is exactly one well-formed UTF-8 character (RFC 3629). */
static int
ref_one(const uint8_t *b, size_t n)
{
    uint32_t cp;
    size_t need, i;

    if (n == 1) {
        return b[0] < 0x80;
    }
    if ((b[0] & 0xE0) == 0xC0) {
        need = 2, cp = b[0] & 0x1F;
    } else if ((b[0] & 0xF0) == 0xE0) {
        need = 3, cp = b[0] & 0x0F;
    } else if ((b[0] & 0xF8) == 0xF0) {
        need = 4, cp = b[0] & 0x07;
    } else {
        return 0;
    }
    if (n != need) {
        return 0;
    }
    for (i = 1; i < n; i++) {
        if ((b[i] & 0xC0) != 0x80) {
            return 0;
        }
        cp = cp << 6 | (b[i] & 0x3F);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000)) {
        return 0; /* overlong */
    }
    return cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
}

/* Reference: a whole string, one character at a time, its length read off its lead byte. */
static int
ref_valid(const uint8_t *b, size_t n)
{
    size_t i = 0, len;

    while (i < n) {
        len = b[i] < 0x80 ? 1 : (b[i] & 0xE0) == 0xC0 ? 2 : (b[i] & 0xF0) == 0xE0 ? 3 : (b[i] & 0xF8) == 0xF0 ? 4 : 0;
        if (len == 0 || i + len > n || !ref_one(b + i, len)) {
            return 0;
        }
        i += len;
    }
    return 1;
}

static size_t
encode(uint32_t cp, uint8_t *b)
{
    if (cp < 0x80) {
        b[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        b[0] = (uint8_t)(0xC0 | cp >> 6), b[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        b[0] = (uint8_t)(0xE0 | cp >> 12), b[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        b[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    b[0] = (uint8_t)(0xF0 | cp >> 18), b[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    b[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F)), b[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

int
main(void)
{
    uint8_t b[8];
    uint32_t cp, wrong = 0, bad_split = 0;
    unsigned x, y, z;

    for (cp = 0; cp <= 0x10FFFF; cp++) {
        size_t n = encode(cp, b), k;
        int want = !(cp >= 0xD800 && cp <= 0xDFFF);

        wrong += pt_utf8_valid(b, n) != want;
        for (k = 1; want && k < n; k++) { /* split in two feeds: the state carries over */
            pt_utf8_t u = { 0 };

            bad_split += !(pt_utf8_feed(&u, b, k) && pt_utf8_feed(&u, b + k, n - k) && pt_utf8_complete(&u));
        }
    }
    CHECK(wrong == 0, "every code point's encoding judged right (surrogates refused): %u wrong", wrong);
    CHECK(bad_split == 0, "every character split between two feeds is accepted: %u wrong", bad_split);

    wrong = 0;
    for (x = 0; x < 256; x++) {
        b[0] = (uint8_t)x;
        wrong += pt_utf8_valid(b, 1) != ref_valid(b, 1);
        for (y = 0; y < 256; y++) {
            b[1] = (uint8_t)y;
            wrong += pt_utf8_valid(b, 2) != ref_valid(b, 2);
        }
    }
    CHECK(wrong == 0, "every one- and two-byte string judged as the reference does: %u wrong", wrong);

    wrong = 0;
    for (x = 0xE0; x < 0x100; x++) { /* three and four bytes: every lead byte, every second and third byte */
        for (y = 0x70; y < 0xD0; y++) {
            for (z = 0x70; z < 0xD0; z++) {
                b[0] = (uint8_t)x, b[1] = (uint8_t)y, b[2] = (uint8_t)z, b[3] = 0x80;
                wrong += pt_utf8_valid(b, 3) != ref_valid(b, 3);
                wrong += pt_utf8_valid(b, 4) != ref_valid(b, 4);
            }
        }
    }
    CHECK(wrong == 0, "three- and four-byte strings judged as the reference does: %u wrong", wrong);

    {
        static const uint8_t ascii_then_bad[] = "0123456789abcdefghij\xff";
        pt_utf8_t u = { 0 };

        CHECK(!pt_utf8_feed(&u, ascii_then_bad, sizeof(ascii_then_bad) - 1), "a bad byte after a long ASCII run");
        CHECK(!pt_utf8_valid((const uint8_t *)"\xe2\x82", 2), "a truncated character is not complete");
        CHECK(pt_utf8_valid((const uint8_t *)"", 0), "the empty string is valid UTF-8");
    }
    return tap_done();
}
