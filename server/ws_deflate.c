/*
 * permessage-deflate (RFC 7692). Negotiation takes the client's first acceptable offer. Our own deflate uses a
 * 4 KiB window (12 bits) and memLevel 5, as the websockets library that uvicorn serves with does: about 32 KiB per
 * connection that sends, where zlib's defaults take 256 KiB. A smaller window than the client allows needs no
 * announcing, since any inflater decodes it. We ask the client for the same 12 bits when its offer lets us
 * (client_max_window_bits), which keeps our inflate window at 4 KiB too; otherwise inflate takes 15.
 */
#include "ws_deflate.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUR_BITS 12
#define MEM_LEVEL 5
#define TAIL "\x00\x00\xff\xff" /* the end of a sync flush: stripped by the sender, put back by the receiver */

/* ------------------------------------------------------------------------------------------------------------ */
/* Negotiation */

/* A window-bits value, bare or quoted (RFC 7692 7.1.2: 8..15, no leading zero); -1 if it is not one. */
static int
window_bits(pt_span_t v)
{
    if (v.len >= 2 && v.base[0] == '"' && v.base[v.len - 1] == '"') {
        v.base++;
        v.len -= 2;
    }
    if (v.len == 1 && v.base[0] >= '8' && v.base[0] <= '9') {
        return v.base[0] - '0';
    }
    if (v.len == 2 && v.base[0] == '1' && v.base[1] >= '0' && v.base[1] <= '5') {
        return 10 + v.base[1] - '0';
    }
    return -1;
}

/* One offer's parameters (after "permessage-deflate"). false if this server cannot accept the offer as made. */
static bool
offer_params(pt_span_t params, pt_ws_pmd_t *p, int *server_max, int *client_max)
{
    unsigned seen = 0;

    *server_max = *client_max = 0; /* 0: not offered; -1: offered without a value */
    while (params.len > 0) {
        pt_span_t param = pt_span_next_item(&params, ';'), name = pt_span_next_item(&param, '=');
        unsigned bit;

        if (pt_span_ieq(name, "server_no_context_takeover") && param.len == 0) {
            bit = 1, p->server_no_context_takeover = true;
        } else if (pt_span_ieq(name, "client_no_context_takeover") && param.len == 0) {
            bit = 2, p->client_no_context_takeover = true;
        } else if (pt_span_ieq(name, "server_max_window_bits")) {
            bit = 4, *server_max = window_bits(param);
            if (*server_max < 9) {
                return false; /* missing, malformed, or 8, which zlib's raw deflate cannot do */
            }
        } else if (pt_span_ieq(name, "client_max_window_bits")) {
            bit = 8, *client_max = param.len == 0 ? -1 : window_bits(param);
            if (*client_max == 0 || (*client_max < 0 && param.len > 0)) {
                return false;
            }
        } else {
            return false; /* an unknown parameter, or a value where none belongs */
        }
        if (seen & bit) {
            return false; /* each parameter at most once (RFC 7692 7.1) */
        }
        seen |= bit;
    }
    return true;
}

/* Accepts one offer if it can: fills p and the response value. */
static bool
accept_offer(pt_span_t offer, pt_ws_pmd_t *p, char *resp, size_t cap)
{
    pt_span_t name = pt_span_next_item(&offer, ';');
    int server_max, client_max, n;

    if (!pt_span_ieq(name, "permessage-deflate")) {
        return false;
    }
    memset(p, 0, sizeof(*p));
    if (!offer_params(offer, p, &server_max, &client_max)) {
        return false;
    }
    p->server_bits = server_max > 0 && server_max < OUR_BITS ? (uint8_t)server_max : OUR_BITS;
    p->client_bits = 15;
    if (client_max != 0) {
        p->client_bits = client_max > 0 && client_max < OUR_BITS ? (uint8_t)client_max : OUR_BITS;
    }
    n = snprintf(resp, cap, "permessage-deflate%s%s",
                 p->server_no_context_takeover ? "; server_no_context_takeover" : "",
                 p->client_no_context_takeover ? "; client_no_context_takeover" : "");
    if (server_max > 0 && n > 0 && (size_t)n < cap) {
        n += snprintf(resp + n, cap - (size_t)n, "; server_max_window_bits=%d", p->server_bits);
    }
    if (client_max != 0 && n > 0 && (size_t)n < cap) {
        n += snprintf(resp + n, cap - (size_t)n, "; client_max_window_bits=%d", p->client_bits);
    }
    return n > 0 && (size_t)n < cap;
}

bool
pt_ws_deflate_negotiate(const pt_request_t *req, pt_ws_pmd_t *p, char *resp, size_t cap)
{
    size_t i;

    for (i = 0; i < req->nheaders; i++) {
        pt_span_t v = req->headers[i].value;

        if (!pt_span_ieq(req->headers[i].name, "sec-websocket-extensions")) {
            continue;
        }
        while (v.len > 0) {
            if (accept_offer(pt_span_next_item(&v, ','), p, resp, cap)) {
                return true;
            }
        }
    }
    return false;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* zlib */

static z_stream *
stream_new(bool inflating, int bits)
{
    z_stream *z = calloc(1, sizeof(*z));
    int r;

    if (z == NULL) {
        return NULL;
    }
    r = inflating ? inflateInit2(z, -bits)
                  : deflateInit2(z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -bits, MEM_LEVEL, Z_DEFAULT_STRATEGY);
    if (r != Z_OK) {
        free(z);
        return NULL;
    }
    return z;
}

/* Inflates what z holds as input into out, at most *room bytes. */
static int
inflate_into(z_stream *z, pt_buf_t *out, size_t *room)
{
    for (;;) {
        size_t step = *room < 16384 ? *room + 1 : 16384; /* one byte past the room tells that it overflowed */
        size_t got;
        int r;

        if (pt_buf_reserve(out, step) < 0) {
            return -ENOMEM;
        }
        z->next_out = (Bytef *)out->data + out->len;
        z->avail_out = (uInt)step;
        r = inflate(z, Z_SYNC_FLUSH);
        got = step - z->avail_out;
        if (got > *room) {
            return -E2BIG;
        }
        out->len += got;
        *room -= got;
        if (r == Z_STREAM_END) {
            inflateReset(z); /* a final block ended the stream: what follows starts a new one */
            if (z->avail_in == 0) {
                return 0;
            }
        } else if (r == Z_BUF_ERROR) {
            return 0; /* no progress possible: it needs more input */
        } else if (r != Z_OK) {
            return -EINVAL;
        } else if (z->avail_out > 0) {
            return 0; /* it stopped with room to spare: the input is used up */
        }
    }
}

int
pt_ws_inflate(pt_ws_deflate_t *d, const uint8_t *p, size_t n, bool last, pt_buf_t *out, size_t *room)
{
    int r = 0;

    if (d->in == NULL && (d->in = stream_new(true, d->p.client_bits)) == NULL) {
        return -ENOMEM;
    }
    if (n > 0) {
        d->in->next_in = (Bytef *)p;
        d->in->avail_in = (uInt)n;
        r = inflate_into(d->in, out, room);
    }
    if (r == 0 && last) {
        d->in->next_in = (Bytef *)TAIL;
        d->in->avail_in = 4;
        r = inflate_into(d->in, out, room);
        if (d->p.client_no_context_takeover) {
            inflateReset(d->in);
        }
    }
    return r;
}

int
pt_ws_deflate(pt_ws_deflate_t *d, const uint8_t *p, size_t n, pt_buf_t *out)
{
    z_stream *z;
    size_t start = out->len;

    if (d->out == NULL && (d->out = stream_new(false, d->p.server_bits)) == NULL) {
        return -ENOMEM;
    }
    z = d->out;
    z->next_in = (Bytef *)p;
    z->avail_in = (uInt)n;
    do {
        size_t step = deflateBound(z, z->avail_in) + 16;

        if (pt_buf_reserve(out, step) < 0) {
            return -ENOMEM;
        }
        z->next_out = (Bytef *)out->data + out->len;
        z->avail_out = (uInt)step;
        deflate(z, Z_SYNC_FLUSH);
        out->len += step - z->avail_out;
    } while (z->avail_out == 0);
    if (out->len - start >= 4 && memcmp(out->data + out->len - 4, TAIL, 4) == 0) {
        out->len -= 4;
    }
    if (d->p.server_no_context_takeover) {
        deflateReset(z);
    }
    return 0;
}

void
pt_ws_deflate_free(pt_ws_deflate_t *d)
{
    if (d->in != NULL) {
        inflateEnd(d->in);
        free(d->in);
    }
    if (d->out != NULL) {
        deflateEnd(d->out);
        free(d->out);
    }
    d->in = d->out = NULL;
}
