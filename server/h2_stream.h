/*
 * What h2.c (the connection) and h2_stream.c (a stream) share: the two structs, and the calls between them.
 * Nothing else includes this file.
 */
#ifndef PT_H2_STREAM_H
#define PT_H2_STREAM_H

#include <nghttp2/nghttp2.h>

#include "conn.h"
#include "h2.h"

struct pt_h2_s {
    pt_conn_t *c;
    nghttp2_session *session;
    pt_h2_stream_t *streams; /* every stream not yet freed: open, or closed but still with the app */
    size_t nstreams;
    size_t app_busy;  /* streams whose request the app holds (c->app_busy mirrors app_busy > 0) */
    bool in_recv;     /* inside nghttp2_session_mem_recv: sending waits until it returns */
    bool held;        /* the connection's output bound held frames back: send again once it drains */
    bool goaway;      /* GOAWAY queued: no stream beyond it will be served */
    bool ending;      /* the connection ends once the last stream is done */
    bool drain_due;   /* a suspended stream's queue came down to PT_OUT_LOW: on_drain is due */
    uint64_t settled; /* loop time (ms) the last stream went: the keep-alive timeout runs from it */
};

struct pt_h2_stream_s {
    pt_request_t req;
    pt_h2_t *h2;
    pt_h2_stream_t *prev, *next; /* h2->streams */
    int32_t id;
    uint64_t begun;    /* loop time (ms) its header block began: --header-timeout */
    uint64_t progress; /* loop time (ms) its body or response last moved, or it went to the app: --client-timeout */

    /* The request head: names and values (lower-case, as HTTP/2 sends them) in one arena, by offsets until the
     * block ends, then spans. */
    pt_buf_t head;
    uint32_t (*hoff)[4]; /* name offset, name length, value offset, value length */
    size_t nhdr, hcap;
    size_t head_bytes; /* against --max-header-size */
    int32_t pseudo[4]; /* arena offsets of :method, :path, :authority, :scheme, or -1 */
    uint32_t pseudo_len[4];
    int refuse; /* a status the server answers with instead of the app (431, 413, 400, 417, 501) */
    const char *refuse_why;

    /* The response: the app's bytes not yet framed (the head block first, until it is submitted). */
    pt_buf_t out;
    size_t out_off;
    bool head_submitted;
    bool out_end;     /* PT_SEND_END came: the body ends after `out` */
    bool out_short;   /* ... short of its Content-Length: the stream is reset, not ended */
    bool deferred;    /* the data provider said NGHTTP2_ERR_DEFERRED: resume it when bytes come */
    bool from_worker; /* the response's bytes count in req.out_pending (a worker's) */
    bool suspended;   /* a loop-thread app waits for on_drain */

    bool head_done;    /* its header block ended */
    bool dispatched;   /* the request went to the app (or the server answered it) */
    bool app_busy;     /* the app holds req */
    bool closed;       /* nghttp2 closed the stream */
    bool holding;      /* a call into the app is under way: the stream outlives it (stream_release) */
    bool body_paused;  /* the app is PT_BODY_HIGH behind: its window is not given back */
    size_t unconsumed; /* body bytes whose stream window was held back */
};

/* h2_stream.c, for h2.c's nghttp2 callbacks */
pt_h2_stream_t *pt_h2_stream_new(pt_h2_t *h2, int32_t id);
void pt_h2_stream_free(pt_h2_stream_t *s);
int pt_h2_stream_header(pt_h2_stream_t *s, const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen);
/* The header block ended (HEADERS with END_HEADERS): the request goes to the app, or the server answers it. */
void pt_h2_stream_head_done(pt_h2_stream_t *s, bool end_stream);
void pt_h2_stream_data(pt_h2_stream_t *s, const uint8_t *data, size_t len);
void pt_h2_stream_body_end(pt_h2_stream_t *s);
/* nghttp2 closed the stream (answered, reset by either side, or the connection went). */
void pt_h2_stream_closed(pt_h2_stream_t *s, uint32_t error_code);
/* The client is gone (the connection closes, or it half-closed before the request was complete): the app learns;
 * with `reset`, the stream is reset too (RST_STREAM CANCEL). */
void pt_h2_stream_cancel(pt_h2_stream_t *s, bool reset);
/* nghttp2's send_data_callback: the frame header and `length` bytes of the stream's output to the connection. */
int pt_h2_stream_send_data(pt_h2_stream_t *s, const uint8_t *framehd, size_t length);
/* The loop-thread app suspended on this stream gets on_drain (from the drain idle, never inside nghttp2). */
void pt_h2_stream_drained(pt_h2_stream_t *s);
/* Whether the stream waits on its client: for body bytes its app waits for, or to take its response. */
bool pt_h2_stream_waits_on_client(pt_h2_stream_t *s);

/* h2.c, for h2_stream.c */
/* Frames go out now, unless nghttp2 is calling us (then once it returns). */
void pt_h2_kick(pt_h2_t *h2);
/* A stream was freed, or went back from the app: the connection may now go idle, or end. */
void pt_h2_stream_gone(pt_h2_t *h2);

#endif
