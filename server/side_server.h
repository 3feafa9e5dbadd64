/*
 * A small HTTP server of C handlers on a thread and libuv loop of its own: the GIL monitor's (gateway/gil_monitor.c)
 * and the master's GIL page (master_monitor.c). It reuses server/ whole (connections, parsing, limits, timeouts);
 * its handlers run on its thread as a loop-thread app, so it keeps answering while the app's loop is blocked or
 * the GIL is saturated. It never touches Python.
 */
#ifndef PT_SIDE_SERVER_H
#define PT_SIDE_SERVER_H

#include <stdbool.h>
#include <uv.h>

#include "app.h"
#include "config.h"
#include "server.h"

typedef struct pt_listener_s pt_listener_t;

typedef struct {
    pt_config_t cfg; /* the process's, with the one bind, no access log, a small body limit */
    uv_loop_t loop;
    pt_server_t srv;
    pt_app_t app;
    pt_listener_t *listeners;
    int nlisteners;
    uv_thread_t thread;
    void (*on_thread)(void);
} pt_side_server_t;

/*
 * Listens on `bind` with app's on_request and on_gone (the rest of `app` is filled in). Handlers answer with
 * pt_req_send on the side server's thread. Returns 0 or a negative libuv error (logged by pt_listen_all).
 */
int pt_side_server_listen(pt_side_server_t *s, const pt_config_t *cfg, const char *bind, const pt_app_t *app);
/* Where it listens ("http://127.0.0.1:8001"). */
const char *pt_side_server_url(const pt_side_server_t *s);
/* Starts its thread; on_thread (optional) runs there first. Timers may be added to s->loop before. */
int pt_side_server_run(pt_side_server_t *s, void (*on_thread)(void));

/* A complete small response (no-store, readable from any origin: a master's page reads each worker's monitor). */
void pt_side_server_respond(pt_request_t *req, const char *status, const char *type, const char *body, size_t len);
bool pt_side_server_path_is(const pt_request_t *req, const char *path);

#endif
