/*
 * The server: what one libuv loop shares among its connections (config, app, parser settings, the read buffer,
 * the worker hand-off, the to-do lists), and what is done to all of them at once (graceful shutdown, abort, the
 * --timeout watch). Loop thread only.
 */
#ifndef PT_SERVER_H
#define PT_SERVER_H

#include <llhttp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "app.h"
#include "buf.h"
#include "config.h"
#include "todo.h"

typedef struct pt_server_s pt_server_t;

/* What the limits count across every loop's server (--loops, loops.c): a lone loop's server counts in its own. */
typedef struct {
    _Atomic size_t nconns;     /* open connections */
    _Atomic size_t nbusy;      /* requests in the app */
    _Atomic uint64_t requests; /* requests handed to the app so far */
} pt_server_totals_t;
typedef struct pt_conn_s pt_conn_t;
typedef struct pt_listener_s pt_listener_t;

/* Every connection reads into the loop's one buffer of this size; only unparsed leftovers are copied out. */
#define PT_READ_BUF_SIZE (64 * 1024)

struct pt_server_s {
    uv_loop_t *loop;
    const pt_config_t *cfg;
    pt_app_t *app;
    pt_buf_t tls_plain; /* what a TLS connection's read decrypted to, reused by every read */
    llhttp_settings_t parser_settings;
    char *read_buf;
    uv_async_t handoff; /* worker -> loop messages (handoff.c) */
    uv_mutex_t handoff_lock;
    struct pt_msg_s *handoff_head, *handoff_tail;
    pt_conn_t *conns; /* every open connection, for shutdown */
    size_t nconns;
    size_t nbusy;               /* connections with a request in the app */
    pt_server_totals_t *totals; /* the counts --max-connections and --limit-concurrency compare: own_totals, or
                                 * the first loop's under --loops */
    pt_server_totals_t own_totals;
    bool stopping;
    uv_idle_t drain_idle; /* out.c: runs on_drain for suspended loop-thread apps whose output drained */
    pt_todo_t drain;
    uv_prepare_t flush_prepare; /* out.c: writes what asyncio tasks sent, one write per connection per turn */
    pt_todo_t flush;
    uv_prepare_t wake_prepare; /* conn.c: wakes workers waiting for body bytes once the loop has read */
    pt_todo_t wake;
    void (*on_idle)(pt_server_t *srv); /* called when stopping and the last connection closed */
    pt_listener_t *listeners;          /* what pt_listen_all opened, to pause and resume accepting (listen.c) */
    int nlisteners;
    bool accept_paused;
    size_t conn_budget;      /* connections the descriptor limit leaves room for (listen.c) */
    uint64_t pause_logged;   /* loop time (ms) the last pause was logged: one line per 10 s at most */
    unsigned pauses;         /* pauses since that line */
    uv_timer_t accept_timer; /* tries to resume accepting every second while paused */
    uv_timer_t accept_hold;  /* --loops: a loop above its share of connections takes its next one 1 ms later */
};

int pt_server_init(pt_server_t *srv, uv_loop_t *loop, const pt_config_t *cfg, pt_app_t *app);
/* A request goes to the app, and comes back (counted in the loop's server and in its totals). */
void pt_server_request_started(pt_server_t *srv);
void pt_server_request_ended(pt_server_t *srv);
void pt_server_close(pt_server_t *srv);
/* Graceful shutdown: connections idle for a while close now; busy ones, and idle ones that were just used (their
 * client may be sending the next request this instant), answer one more request with "Connection: close". */
void pt_server_shutdown(pt_server_t *srv);
/* --timeout: a request in the app that has moved no bytes either way for `ms` (the longest such), or NULL. A
 * response streaming slowly, or a body still arriving, is progress; an app computing or blocked is not. */
pt_request_t *pt_server_stuck_request(pt_server_t *srv, uint64_t ms, uint64_t *stuck_ms);
/* Closes every connection at once (graceful timeout expired). */
void pt_server_abort_all(pt_server_t *srv);
/* Closes every handle of `loop` not closing yet, so that uv_run returns once their callbacks have run. */
void pt_loop_close_all(uv_loop_t *loop);

/* A connection joins the server when it starts (conn.c) and leaves once its handles are closed. */
void pt_server_add_conn(pt_server_t *srv, pt_conn_t *c);
void pt_server_remove_conn(pt_server_t *srv, pt_conn_t *c);

#endif
