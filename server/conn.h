/*
 * A client connection: its lifecycle and single close path, reading and parsing, handing requests to the app in
 * order, keep-alive and its one timer (conn.c); its write side lives in out.c. Loop thread only, except where
 * request.h says otherwise.
 */
#ifndef PT_CONN_H
#define PT_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "http.h"
#include "request.h"
#include "server.h"
#include "todo.h"

typedef struct pt_listener_s pt_listener_t;

/* How long a just-used keep-alive connection is given, on shutdown, to send the request that may be on its way. */
#define PT_SHUTDOWN_LINGER_MS 1000
typedef struct pt_ws_s pt_ws_t;

/*
 * What the connection is doing; decides what its one timer means. The states after APP are its way out, in order:
 * a connection only moves forward through them.
 */
typedef enum {
    PT_CONN_IDLE,     /* between requests: keep-alive timeout, or header timeout on a fresh connection */
    PT_CONN_HEAD,     /* part of a request head received: header timeout -> 408 */
    PT_CONN_BODY,     /* a loop-thread app's request body arriving: client timeout */
    PT_CONN_APP,      /* a request is with the app */
    PT_CONN_WS,       /* the request became a WebSocket (ws.c): pings, and the closing handshake's timeout */
    PT_CONN_OUTPUT,   /* between requests, but the responses queued exceed PT_OUT_HIGH: the next request
                               waits until the client reads them down to PT_OUT_LOW; client timeout */
    PT_CONN_H2,       /* HTTP/2 (h2.h): the streams are the requests, and the timer is the session's */
    PT_CONN_ENDING,   /* a final response is being flushed (the app may still hold the request) */
    PT_CONN_SHUTDOWN, /* the FIN is queued behind it; lingering, unread input is drained for a while */
    PT_CONN_CLOSED,   /* the close path has begun: output is dropped; the handles close once the app lets go */
} pt_conn_state_t;

struct pt_conn_s {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    uv_timer_t timer;
    pt_server_t *srv;
    pt_listener_t *listener;
    pt_conn_t *prev, *next; /* srv->conns */
    pt_conn_state_t state;
    int handles_open;

    pt_http_t http;
    pt_buf_t rest; /* received bytes not yet parsed (the parser is paused at the end of a message) */
    bool reading;
    bool eof;                 /* the client half-closed: finish the current response, then close */
    bool app_busy;            /* the app holds `req` (PT_SEND_DONE not yet received) */
    bool resp_done;           /* PT_SEND_END received for the current request */
    bool message_done;        /* the current request's body was fully parsed */
    bool linger;              /* after the last write: shutdown, drain input briefly, then close */
    bool in_process;          /* inside conn_process: it carries on with the bytes it holds */
    pt_todo_link_t wake_link; /* on srv->wake: body bytes for a waiting worker, signalled before the poll */
    uint64_t deadline;        /* loop time (ms) at which the state's timeout expires */
    uint64_t idle_since;      /* loop time (ms) the connection last became idle */
    uint64_t progress;        /* loop time (ms) bytes last moved, or the request went to the app (--timeout) */
    uint64_t timer_due;       /* loop time the timer is armed for */
    uint64_t rate_due;        /* loop time of the next --min-body-rate check, or 0 */
    uint64_t rate_since;      /* ... measured since this time, */
    uint64_t rate_base;       /* ... from this many body bytes */

    pt_request_t req;   /* HTTP/1.x's one request at a time (HTTP/2's are its streams') */
    pt_ws_t *ws;        /* after a 101: the WebSocket (ws.c); the connection is never reused then */
    struct pt_h2_s *h2; /* HTTP/2 (h2.h), from the preface or ALPN on; then app_busy: any stream is with the app */
    bool sniffed;       /* the first bytes were checked for the HTTP/2 preface (--http) */

    /* Output (out.c): bytes waiting for the socket (loop-thread apps and server replies). */
    pt_buf_t wbuf;
    size_t inflight;           /* response bytes in uv_write requests not yet completed (plaintext, with TLS) */
    unsigned writes;           /* uv_write requests not yet completed: nothing may overtake them */
    struct pt_tls_s *tls;      /* a TLS connection's state (tls.h), or NULL */
    bool suspended;            /* a loop-thread app waits for on_drain */
    pt_todo_link_t drain_link; /* on srv->drain: its output drained, on_drain is due */
    pt_todo_link_t flush_link; /* on srv->flush: output from an asyncio task, written once Python yields */

    char remote_addr[64];
    char client_addr[64]; /* the client behind a trusted proxy (--forwarded-allow-ips) */
    int remote_port;
};

pt_conn_t *pt_conn_new(pt_server_t *srv);
/* Starts serving a freshly accepted stream (already initialised on srv->loop and accepted). */
void pt_conn_start(pt_server_t *srv, pt_listener_t *ls, pt_conn_t *c);
/* Frees a connection that never started (accept failed); closes its stream first if it was initialised. */
void pt_conn_discard(pt_conn_t *c, bool stream_initialised);
/* Closes now, dropping unsent output. With a request in the app, the handles close once the app lets go of it. */
void pt_conn_close(pt_conn_t *c);
/* (Re)arms the connection's timer `seconds` from now, for the current state (conn_timer.c). */
void pt_conn_set_deadline(pt_conn_t *c, double seconds);
/* A request body is expected: --min-body-rate starts counting (conn_timer.c). */
void pt_conn_rate_start(pt_conn_t *c);
/* Answers with an error of the server's own and closes (lingering: the client may still be sending). */
void pt_conn_reply_error(pt_conn_t *c, int status, const char *why);
/* The client made progress (sent body bytes, took response bytes): push its timeout back. One store: the timer is
 * lazy and re-arms from the new deadline when it fires. */
void pt_conn_progress(pt_conn_t *c);
/* The app consumed body bytes below the low-water mark: read again. */
void pt_conn_resume_reading(pt_conn_t *c);
/* The app is behind (a WebSocket's unread messages): stop reading until pt_conn_resume_reading. */
void pt_conn_pause_reading(pt_conn_t *c);
/*
 * Flushes what is queued, then closes: at once, or lingering when the client may still be sending. With a request
 * still in the app it only marks the connection ENDING, and pt_conn_request_finished ends it once the app lets go;
 * a WebSocket's connection ends at once (nothing more will be written), and the app learns of it through on_gone.
 */
void pt_conn_end(pt_conn_t *c, bool linger);
/* Sets where req came from (the peer, or the client behind a trusted proxy), its scheme and TLS. */
void pt_conn_origin(pt_conn_t *c, pt_request_t *req);
/* The 101 is queued: bytes that came behind the upgrade request are the WebSocket's, and reading goes on. */
void pt_conn_ws_started(pt_conn_t *c);
/* The response is complete and the app has let go of the request (out.c): reuse the connection or close it. */
void pt_conn_request_finished(pt_conn_t *c);
/* PT_CONN_OUTPUT: the client read the queued responses down to PT_OUT_LOW (out.c): parse the next request. */
void pt_conn_next_request(pt_conn_t *c);

#endif
