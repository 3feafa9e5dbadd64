/*
 * A client connection: reading, parsing, handing requests to the app in order, writing responses, keep-alive,
 * timeouts and the single close path. Loop thread only, except where request.h says otherwise.
 */
#ifndef PT_CONN_H
#define PT_CONN_H

#include <llhttp.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "app.h"
#include "buf.h"
#include "config.h"
#include "request.h"

typedef struct pt_server_s pt_server_t;
typedef struct pt_listener_s pt_listener_t;

/* A connection's place on one of the server's to-do lists (see pt_conn_todo_t). */
typedef struct {
    bool on;
    struct pt_conn_s *next;
} pt_conn_link_t;

/* Connections the loop handles once, from an idle or prepare handle, before it next blocks. */
typedef struct {
    struct pt_conn_s *head;
    size_t link;            /* offsetof(pt_conn_t, <the list's pt_conn_link_t>) */
} pt_conn_todo_t;

/* What the connection is doing; decides what its one timer means. */
typedef enum {
    PT_CONN_IDLE,           /* between requests: keep-alive timeout, or header timeout on a fresh connection */
    PT_CONN_HEAD,           /* part of a request head received: header timeout -> 408 */
    PT_CONN_BODY,           /* a loop-thread app's request body arriving: client timeout */
    PT_CONN_APP,            /* a request is with the app */
    PT_CONN_CLOSING,        /* a final response is being flushed, then close */
} pt_conn_state_t;

/* Per-loop state shared by every connection. */
struct pt_server_s {
    uv_loop_t *loop;
    const pt_config_t *cfg;
    pt_app_t *app;
    llhttp_settings_t parser_settings;
    char *read_buf;         /* one read buffer for the whole loop: connections keep only unparsed leftovers */
    uv_async_t handoff;     /* worker -> loop messages */
    uv_mutex_t handoff_lock;
    struct pt_msg_s *handoff_head, *handoff_tail;
    struct pt_conn_s *conns;   /* every open connection, for shutdown */
    size_t nconns;
    size_t nbusy;           /* connections with a request in the app */
    uint64_t requests;      /* requests handed to the app so far */
    bool stopping;
    uv_idle_t drain_idle;   /* runs on_drain for suspended loop-thread apps whose output drained */
    pt_conn_todo_t drain;
    uv_prepare_t flush_prepare;     /* writes what asyncio tasks sent, one write per connection per loop turn */
    pt_conn_todo_t flush;
    uv_prepare_t wake_prepare;  /* wakes workers waiting for body bytes once the loop has read what there was */
    pt_conn_todo_t wake;
    void (*on_idle)(pt_server_t *srv);  /* called when stopping and the last busy connection finished */
};

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
    struct pt_conn_s *prev, *next;
    pt_conn_state_t state;
    int handles_open;

    llhttp_t parser;
    bool paused;            /* llhttp is paused at the end of a message; `rest` holds what follows */
    pt_buf_t rest;          /* received bytes not yet parsed */
    bool reading;
    bool eof;               /* the client half-closed: finish the current response, then close */
    bool app_busy;          /* the app holds `req` (PT_SEND_DONE not yet received) */
    bool resp_done;         /* PT_SEND_END received for the current request */
    bool dispatched;        /* the current request was handed to the app */
    bool message_done;      /* the current request's body was fully parsed */
    bool closing;           /* the close path has started */
    bool linger;            /* after the last write: shutdown, drain input briefly, then close */
    bool shutting;          /* uv_shutdown was issued: the connection is on its way out */
    bool upgrade_pause;     /* llhttp paused with HPE_PAUSED_UPGRADE (resumed differently) */
    bool in_process;        /* inside conn_process: it carries on with the bytes it holds */
    bool suspended;         /* a loop-thread app waits for on_drain */
    pt_conn_link_t drain_link;      /* on srv->drain: its output drained, on_drain is due */
    pt_conn_link_t flush_link;      /* on srv->flush: output from an asyncio task, written once Python yields */
    pt_conn_link_t wake_link;       /* on srv->wake: body bytes for a waiting worker, signalled before the poll */
    uint64_t deadline;      /* loop time (ms) at which the state's timeout expires */
    uint64_t idle_since;    /* loop time (ms) the connection last became idle */
    uint64_t progress;      /* loop time (ms) bytes last moved, or the request went to the app (--timeout) */
    uint64_t timer_due;     /* loop time the timer is armed for */
    size_t idle_bytes;      /* blank lines received between requests */
    /* Head scan (see head_scan in conn.c): a CR must be followed by LF anywhere in a request head. */
    bool scan_cr, scan_seen, scan_done;
    uint8_t scan_m;

    /* Head arena: request-target and header bytes of the current request. */
    pt_buf_t head;
    size_t head_bytes;      /* counted against --max-header-size */
    struct pt_hoff_s *hoff; /* header offsets into `head` */
    pt_header_t *hdrs;      /* the same as spans, filled when the head is complete */
    size_t nhdr;
    size_t hcap;
    int last_cb;            /* 0 none, 1 field, 2 value: to join field/value spans split across reads */
    uint32_t url_off, url_len;
    int error_status;       /* set by a parser callback: reply with this status and close */
    const char *error_why;  /* and why, for the log (a policy rather than a parse error) */
    uint64_t body_limit;

    pt_request_t req;

    /* Output: bytes waiting for the socket (loop-thread apps and server replies). */
    pt_buf_t wbuf;
    size_t inflight;        /* bytes in uv_write requests not yet completed */

    char remote_addr[64];
    char client_addr[64];   /* the client behind a trusted proxy (--forwarded-allow-ips) */
    int remote_port;
};

struct pt_hoff_s {
    uint32_t name_off, name_len, value_off, value_len;
};

int pt_server_init(pt_server_t *srv, uv_loop_t *loop, const pt_config_t *cfg, pt_app_t *app);
void pt_server_close(pt_server_t *srv);
/* Starts serving a freshly accepted stream (already initialised on srv->loop and accepted). */
void pt_conn_start(pt_server_t *srv, pt_listener_t *ls, pt_conn_t *c);
pt_conn_t *pt_conn_new(pt_server_t *srv);
/* Frees a connection that never started (accept failed); closes its stream first if it was initialised. */
void pt_conn_discard(pt_conn_t *c, bool stream_initialised);
/* (Re)arms the connection's timer `seconds` from now, for the current state. */
void pt_conn_set_deadline(pt_conn_t *c, double seconds);
/* Graceful shutdown: connections idle for a while close now; busy ones, and idle ones that were just used (their
 * client may be sending the next request this instant), answer one more request with "Connection: close". */
void pt_server_shutdown(pt_server_t *srv);
/* --timeout: a request in the app that has moved no bytes either way for `ms` (the longest such), or NULL. A
 * response streaming slowly, or a body still arriving, is progress; an app computing or blocked is not. */
pt_request_t *pt_server_stuck_request(pt_server_t *srv, uint64_t ms, uint64_t *stuck_ms);
/* Closes every connection at once (graceful timeout expired). */
void pt_server_abort_all(pt_server_t *srv);

/* Worker -> loop hand-off (request.c). */
int pt_handoff_init(pt_server_t *srv);
void pt_handoff_close(pt_server_t *srv);

/* Where the bytes given to pt_conn_app_output come from, and who owns them. */
typedef enum {
    PT_OUT_LOOP,        /* a loop-thread app: borrowed, batched into the connection's buffer */
    PT_OUT_OWNED,       /* a worker's buffer (or NULL), now the connection's to free; counted in req->out_pending */
} pt_out_mode_t;

/* Called on the loop thread with the app's output (request.c, or a loop-thread app through pt_req_send). */
void pt_conn_app_output(pt_conn_t *c, char *data, size_t len, unsigned flags, pt_out_mode_t mode);
/* A worker's output still inside its messages (small ones), in one writev; counted in req->out_pending too. */
void pt_conn_app_outputv(pt_conn_t *c, const uv_buf_t *bufs, unsigned nbufs, unsigned flags);
/* A loop-thread app stops producing until on_drain. */
void pt_conn_suspend(pt_conn_t *c);
void pt_conn_resume_reading(pt_conn_t *c);
void pt_conn_send_continue(pt_conn_t *c);
size_t pt_conn_out_queued(pt_conn_t *c);

/* Parser glue (http.c). */
void pt_http_settings_init(llhttp_settings_t *s);
void pt_http_reset(pt_conn_t *c);
const char *pt_http_error_reason(pt_conn_t *c, llhttp_errno_t err);

/* Called by http.c from parser callbacks. */
int pt_conn_on_headers(pt_conn_t *c);
int pt_conn_on_body(pt_conn_t *c, const char *p, size_t n);
int pt_conn_on_message(pt_conn_t *c);

#endif
