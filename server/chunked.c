/*
 * Chunked request bodies, byte by byte:
 *
 *   chunked-body   = *chunk last-chunk trailer-section CRLF
 *   chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 *   chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
 *   chunk-ext-val  = token / quoted-string
 *   trailer-section = *( field-line CRLF )
 *
 * Extensions and trailer fields are checked and dropped (RFC 9110 6.5.1 lets a server discard trailers). Anything
 * the grammar does not allow is a 400: a parser that guessed here would read the next request out of this body.
 */
#include "chunked.h"

enum {
    ST_SIZE_FIRST,   /* the first hex digit of a chunk size */
    ST_SIZE,         /* more hex digits */
    ST_EXT_BWS,      /* whitespace after the size or a value: a ';' must follow */
    ST_EXT_NAME_BWS, /* after ';' */
    ST_EXT_NAME,
    ST_EXT_NAME_END,  /* whitespace after a name: '=' or ';' must follow */
    ST_EXT_VALUE_BWS, /* after '=' */
    ST_EXT_TOKEN,
    ST_EXT_QUOTED,
    ST_EXT_QUOTED_PAIR,
    ST_EXT_AFTER_QUOTED,
    ST_SIZE_LF,
    ST_DATA,
    ST_DATA_CR,
    ST_DATA_LF,
    ST_TRAILER_START,
    ST_TRAILER_NAME,
    ST_TRAILER_VALUE,
    ST_TRAILER_LF,
    ST_END_LF,
    ST_DONE,
    ST_ERROR,
};

void
pt_chunked_init(pt_chunked_t *ch, uint64_t max_total, size_t max_trailer, size_t max_trailers)
{
    *ch = (pt_chunked_t){
        .state = ST_SIZE_FIRST, .max_total = max_total, .max_trailer = max_trailer, .max_trailers = max_trailers
    };
}

static int
hex_value(unsigned char c)
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

static int
fail(pt_chunked_t *ch, int status, const char *why)
{
    ch->state = ST_ERROR;
    ch->status = status;
    ch->why = why;
    return -1;
}

/* One byte of a chunk-size line after the size: the extensions. 0, or -1 on a syntax error. */
static int
ext_byte(pt_chunked_t *ch, unsigned char c)
{
    int ws = c == ' ' || c == '\t';

    switch (ch->state) {
    case ST_EXT_BWS: ch->state = ws ? ST_EXT_BWS : c == ';' ? ST_EXT_NAME_BWS : ST_ERROR; break;
    case ST_EXT_NAME_BWS: ch->state = ws ? ST_EXT_NAME_BWS : pt_is_tchar(c) ? ST_EXT_NAME : ST_ERROR; break;
    case ST_EXT_NAME:
        if (!pt_is_tchar(c)) {
            ch->state = ws ? ST_EXT_NAME_END : c == '=' ? ST_EXT_VALUE_BWS : c == ';' ? ST_EXT_NAME_BWS : ST_ERROR;
        }
        break;
    case ST_EXT_NAME_END:
        ch->state = ws ? ST_EXT_NAME_END : c == '=' ? ST_EXT_VALUE_BWS : c == ';' ? ST_EXT_NAME_BWS : ST_ERROR;
        break;
    case ST_EXT_VALUE_BWS:
        ch->state = ws ? ST_EXT_VALUE_BWS : c == '"' ? ST_EXT_QUOTED : pt_is_tchar(c) ? ST_EXT_TOKEN : ST_ERROR;
        break;
    case ST_EXT_TOKEN:
        if (!pt_is_tchar(c)) {
            ch->state = ws ? ST_EXT_BWS : c == ';' ? ST_EXT_NAME_BWS : ST_ERROR;
        }
        break;
    case ST_EXT_QUOTED:
        /* qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text */
        if (c == '"') {
            ch->state = ST_EXT_AFTER_QUOTED;
        } else if (c == '\\') {
            ch->state = ST_EXT_QUOTED_PAIR;
        } else if (!(c == '\t' || (c >= 0x20 && c != 0x7f))) {
            ch->state = ST_ERROR;
        }
        break;
    case ST_EXT_QUOTED_PAIR: ch->state = c == '\t' || (c >= 0x20 && c != 0x7f) ? ST_EXT_QUOTED : ST_ERROR; break;
    case ST_EXT_AFTER_QUOTED: ch->state = ws ? ST_EXT_BWS : c == ';' ? ST_EXT_NAME_BWS : ST_ERROR; break;
    }
    return ch->state == ST_ERROR ? fail(ch, 400, "invalid chunk extension") : 0;
}

/* One byte of a chunk-size line. 0, or -1 with the error set. */
static int
size_line_byte(pt_chunked_t *ch, unsigned char c)
{
    int d = hex_value(c);

    if (++ch->line > PT_CHUNK_LINE_MAX) {
        return fail(ch, 400, "chunk-size line too long");
    }
    if (ch->state == ST_SIZE_FIRST || ch->state == ST_SIZE) {
        if (d >= 0) {
            uint64_t room = ch->max_total - ch->total;

            /* Refused as soon as it cannot fit, so that the size never overflows. */
            if (ch->left > room >> 4 || ch->left * 16 + (uint64_t)d > room) {
                return fail(ch, 413, "chunk larger than --max-body-size");
            }
            ch->left = ch->left * 16 + (uint64_t)d;
            ch->state = ST_SIZE;
            return 0;
        }
        if (ch->state == ST_SIZE_FIRST) {
            return fail(ch, 400, "invalid chunk size");
        }
        ch->state = ST_EXT_BWS;
        if (c == ' ' || c == '\t') {
            return 0;
        }
        if (c == ';') {
            ch->state = ST_EXT_NAME_BWS;
            return 0;
        }
        if (c != '\r') {
            return fail(ch, 400, "invalid chunk size");
        }
        ch->state = ST_SIZE_LF;
        return 0;
    }
    if (c == '\r' && (ch->state == ST_EXT_NAME || ch->state == ST_EXT_TOKEN || ch->state == ST_EXT_AFTER_QUOTED)) {
        ch->state = ST_SIZE_LF;
        return 0;
    }
    return ext_byte(ch, c);
}

/* One byte of the trailer section. 0, or -1 with the error set. */
static int
trailer_byte(pt_chunked_t *ch, unsigned char c)
{
    if (++ch->trailer_bytes > ch->max_trailer) {
        return fail(ch, 431, "trailer section larger than --max-header-size");
    }
    switch (ch->state) {
    case ST_TRAILER_START:
        if (c == '\r') {
            ch->state = ST_END_LF;
        } else if (!pt_is_tchar(c)) {
            return fail(ch, 400, c == ' ' || c == '\t' ? "obs-fold in the trailer section" : "invalid trailer field");
        } else if (++ch->trailers > ch->max_trailers) {
            return fail(ch, 431, "more trailer fields than --max-headers");
        } else {
            ch->state = ST_TRAILER_NAME;
        }
        return 0;
    case ST_TRAILER_NAME:
        if (c == ':') {
            ch->state = ST_TRAILER_VALUE;
        } else if (!pt_is_tchar(c)) {
            return fail(ch, 400, "invalid trailer field name");
        }
        return 0;
    case ST_TRAILER_VALUE:
        if (c == '\r') {
            ch->state = ST_TRAILER_LF;
        } else if (!(c == '\t' || (c >= 0x20 && c != 0x7f))) {
            return fail(ch, 400, "invalid character in a trailer field");
        }
        return 0;
    case ST_TRAILER_LF:
        if (c != '\n') {
            return fail(ch, 400, "bare CR in the trailer section");
        }
        ch->state = ST_TRAILER_START;
        return 0;
    default: /* ST_END_LF */
        if (c != '\n') {
            return fail(ch, 400, "bare CR after the trailer section");
        }
        ch->state = ST_DONE;
        return 0;
    }
}

pt_chunked_result_t
pt_chunked_decode(pt_chunked_t *ch, const char *p, size_t n, size_t *used, pt_span_t *data)
{
    size_t i = 0;

    while (i < n) {
        unsigned char c = (unsigned char)p[i];

        switch (ch->state) {
        case ST_DATA: {
            size_t k = n - i < ch->left ? n - i : (size_t)ch->left;

            *data = (pt_span_t){ p + i, k };
            ch->left -= k;
            ch->total += k;
            if (ch->left == 0) {
                ch->state = ST_DATA_CR;
            }
            *used = i + k;
            return PT_CHUNKED_DATA;
        }
        case ST_DATA_CR:
        case ST_DATA_LF:
            if (c != (ch->state == ST_DATA_CR ? '\r' : '\n')) {
                fail(ch, 400, "chunk data longer than its size, or not ended by CRLF");
                *used = i;
                return PT_CHUNKED_ERROR;
            }
            ch->state = ch->state == ST_DATA_CR ? ST_DATA_LF : ST_SIZE_FIRST;
            ch->line = 0;
            break;
        case ST_SIZE_LF:
            if (c != '\n') {
                fail(ch, 400, "bare CR in a chunk-size line");
                *used = i;
                return PT_CHUNKED_ERROR;
            }
            ch->state = ch->left > 0 ? ST_DATA : ST_TRAILER_START;
            break;
        case ST_TRAILER_START:
        case ST_TRAILER_NAME:
        case ST_TRAILER_VALUE:
        case ST_TRAILER_LF:
        case ST_END_LF:
            if (trailer_byte(ch, c) < 0) {
                *used = i;
                return PT_CHUNKED_ERROR;
            }
            if (ch->state == ST_DONE) {
                *used = i + 1;
                return PT_CHUNKED_DONE;
            }
            break;
        case ST_DONE: *used = i; return PT_CHUNKED_DONE;
        case ST_ERROR: *used = i; return PT_CHUNKED_ERROR;
        default:
            if (size_line_byte(ch, c) < 0) {
                *used = i;
                return PT_CHUNKED_ERROR;
            }
            break;
        }
        i++;
    }
    *used = n;
    return ch->state == ST_DONE ? PT_CHUNKED_DONE : PT_CHUNKED_MORE;
}
