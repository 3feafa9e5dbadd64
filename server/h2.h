/*
 * HTTP/2 (RFC 9113) on a connection, with Debian's libnghttp2: h2 chosen by ALPN on TLS, or h2c by prior knowledge
 * on cleartext (the client's preface), per --http. Each stream is a request of its own (a pt_request_t, the same
 * one HTTP/1.1 hands the app), so WSGI workers and ASGI tasks serve streams without knowing they are streams.
 *
 * h2.c is the connection's side: the nghttp2 session, its settings and limits, reading frames, sending them through
 * out.c (which encrypts on TLS), the timers, GOAWAY. h2_stream.c is a stream's: its request head, its body and the
 * window it gives back, the app's response turned into HEADERS and DATA. Loop thread only.
 */
#ifndef PT_H2_H
#define PT_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "out.h"

typedef struct pt_h2_s pt_h2_t;
typedef struct pt_h2_stream_s pt_h2_stream_t;

/* The client preface (RFC 9113 3.4) that opens h2c by prior knowledge. */
#define PT_H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define PT_H2_PREFACE_LEN 24

/* ---- The connection's side (conn.c, conn_timer.c, out.c, server.c) ---- */

/* What a connection's first bytes say (pt_h2_sniff). */
typedef enum {
    PT_SNIFF_H1,      /* HTTP/1.1: parse the bytes */
    PT_SNIFF_H1_KEPT, /* HTTP/1.1, and the first bytes (they looked like the preface) wait in c->rest: parse them
                       * first, then these */
    PT_SNIFF_WAIT,    /* the bytes were taken: HTTP/2 started with them, the preface is not all here yet, or the
                       * connection ended (--http 2 refuses HTTP/1.1) */
} pt_sniff_t;

/*
 * Which protocol a connection speaks, from its first bytes and --http: on TLS, ALPN said it already; without ALPN,
 * the HTTP/2 client preface (RFC 9113 3.4) is HTTP/2 by prior knowledge (h2c in cleartext), anything else HTTP/1.1.
 * The preface may come in pieces: its first bytes wait in c->rest. With --http 2, a cleartext HTTP/1.1 request is
 * answered 505. Sets c->sniffed once it knows.
 */
pt_sniff_t pt_h2_sniff(pt_conn_t *c, const char *data, size_t n);

/* The connection speaks HTTP/2 from now on: sends the server's SETTINGS. 0, or -1 after logging why (out of
 * memory: the connection is to be closed). */
int pt_h2_start(pt_conn_t *c);
/* Bytes from the client (decrypted on TLS). */
void pt_h2_feed(pt_h2_t *h2, const char *data, size_t n);
/* The client closed its side: streams whose request is incomplete fail; the rest are answered, then it ends. */
void pt_h2_on_eof(pt_h2_t *h2);
/* The connection's timer fired past its deadline: header, keep-alive or client timeout, as the streams stand. */
void pt_h2_on_timer(pt_h2_t *h2, uint64_t now);
/* Graceful shutdown: GOAWAY naming the last stream taken; those streams are answered, then the connection ends. */
void pt_h2_stop(pt_h2_t *h2);
/* The connection is closing: every stream the app still holds learns that its client is gone. */
void pt_h2_conn_gone(pt_h2_t *h2);
/* Frames queued in the session go out, as far as the connection's output bound lets them. */
void pt_h2_send(pt_h2_t *h2);
/* The connection's output drained below PT_OUT_LOW: suspended streams' apps go on, and frames held back go out. */
void pt_h2_on_drain(pt_h2_t *h2);
/* Whether the connection's output bound held frames back, or a suspended stream waits for on_drain. */
bool pt_h2_wants_drain(const pt_h2_t *h2);
/* --timeout: the stream the app has held longest, with the connection's progress (see pt_server_stuck_request). */
pt_request_t *pt_h2_busy_request(pt_h2_t *h2);
void pt_h2_free(pt_h2_t *h2);

/* ---- A stream's side, for request.c and handoff.c (loop thread) ---- */

/* The app's output for a stream (its head as resp.h's HTTP/2 block first), with PT_SEND_* flags. PT_OUT_OWNED:
 * a worker's buffer, freed here, its bytes counted in req->out_pending until framed. */
void pt_h2_app_output(pt_h2_stream_t *s, char *data, size_t len, unsigned flags, pt_out_mode_t mode);
/* A worker's small outputs still inside its messages. */
void pt_h2_app_outputv(pt_h2_stream_t *s, const uv_buf_t *bufs, unsigned nbufs, unsigned flags);
/* Response bytes of the stream not yet framed: what back-pressure compares with PT_OUT_HIGH. */
size_t pt_h2_queued(const pt_h2_stream_t *s);
/* A loop-thread app stops producing until on_drain (its stream's queue at PT_OUT_LOW). */
void pt_h2_suspend(pt_h2_stream_t *s);
/* "100 Continue" as an interim HEADERS frame, unless the response has started. */
void pt_h2_continue(pt_h2_stream_t *s);
/* The app read its body down to PT_BODY_LOW: the window held back goes to the client again. */
void pt_h2_resume_body(pt_h2_stream_t *s);

#endif
