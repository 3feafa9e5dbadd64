/*
 * The chunked transfer coding of a request body (RFC 9112 7.1), decoded by ponte rather than llhttp 8.1, which
 * refuses the optional whitespace the grammar allows around chunk extensions (RFC 9112 7.1.1, RFC 9110 5.6.3).
 * Strict everywhere else: hex sizes only, CRLF line ends only, extensions and trailer fields checked for their
 * syntax (and then dropped), lines and sizes bounded. Pure: no I/O, no allocation; fed any split of the bytes.
 */
#ifndef PT_CHUNKED_H
#define PT_CHUNKED_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* The longest chunk-size line (size and extensions) accepted. */
#define PT_CHUNK_LINE_MAX 4096

typedef struct {
    uint8_t state;
    uint64_t left;                 /* data bytes left in the current chunk (or the size being read) */
    uint64_t total;                /* data bytes so far */
    uint64_t max_total;            /* --max-body-size */
    size_t line;                   /* bytes of the current size or trailer line */
    size_t trailer_bytes;          /* the trailer section, against max_trailer */
    size_t max_trailer;            /* --max-header-size */
    size_t trailers, max_trailers; /* trailer field lines, against --max-headers */
    const char *why;               /* after PT_CHUNKED_ERROR */
    int status;                    /* after PT_CHUNKED_ERROR: 400, 413 or 431 */
} pt_chunked_t;

typedef enum {
    PT_CHUNKED_MORE,  /* every byte given was consumed: feed more */
    PT_CHUNKED_DATA,  /* *data holds body bytes (pointing into the input); call again with the rest */
    PT_CHUNKED_DONE,  /* the body and its trailer section are complete: *used bytes belonged to them */
    PT_CHUNKED_ERROR, /* malformed or over a limit: see status and why */
} pt_chunked_result_t;

void pt_chunked_init(pt_chunked_t *ch, uint64_t max_total, size_t max_trailer, size_t max_trailers);
/* Decodes from p[0..n): returns one event and sets *used to the bytes it consumed to get there. */
pt_chunked_result_t pt_chunked_decode(pt_chunked_t *ch, const char *p, size_t n, size_t *used, pt_span_t *data);

#endif
