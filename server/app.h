/*
 * The seam between the HTTP core (server/, no Python) and whatever runs the application (gateway/).
 * server/ calls these on the loop thread; gateway/ implements them.
 */
#ifndef PT_APP_H
#define PT_APP_H

#include <stdbool.h>
#include <uv.h>

#include "config.h"
#include "request.h"

typedef struct pt_app_s pt_app_t;

struct pt_app_s {
    /*
     * streams_body: the request is handed over as soon as its head is parsed, the body streaming in behind it
     * (pt_req_read); otherwise the app gets it once the whole body is in.
     * on_loop: the app runs on the loop thread (WSGI --threads 0, ASGI); otherwise on worker threads.
     * WSGI workers stream; WSGI on the loop does not; ASGI does both.
     */
    bool streams_body;
    bool on_loop;
    /* websockets: the app takes WebSocket upgrades (server/ws.h): on_body then also means a message or the close
     * came. Otherwise an upgrade is served as plain HTTP (RFC 9110 7.8). Loop-thread apps only. */
    bool websockets;
    /* A request to run. The app answers through pt_req_send, ending with PT_SEND_DONE. */
    void (*on_request)(pt_app_t *app, pt_request_t *req);
    /* Loop-thread apps only: the output queue drained below PT_OUT_LOW; carry on producing the response. */
    void (*on_drain)(pt_app_t *app, pt_request_t *req);
    /* Loop-thread apps only: the client went away while the app had the request; finish up. */
    void (*on_gone)(pt_app_t *app, pt_request_t *req);
    /* Loop-thread streaming apps only: body bytes, the end of the body, or a body error arrived (pt_req_read). */
    void (*on_body)(pt_app_t *app, pt_request_t *req);
    /*
     * Optional: the server has stopped (every connection closed) and the loop is about to end. The app calls
     * done(arg) when it is ready for that (ASGI: after lifespan.shutdown). Called on the loop thread.
     */
    void (*before_exit)(pt_app_t *app, void (*done)(void *arg), void *arg);
    /* Optional: runs the event loop instead of uv_run (ASGI drives libuv from asyncio's selector). */
    int (*run)(pt_app_t *app, uv_loop_t *loop);
    /* --loops (server/loops.h), optional: makes the calling thread, a new loop thread numbered `index` (from 2),
     * able to run the app on `loop` (ASGI: an asyncio loop of its own), before its server listens; `run` is then
     * called on that thread as on the main one. 0, or -1 after saying why. An app without it cannot run on several
     * loops. */
    int (*attach_loop)(pt_app_t *app, uv_loop_t *loop, int index);
    /* After `run` returned on that thread, and every handle of its loop is closed: releases what attach_loop made. */
    void (*detach_loop)(pt_app_t *app, uv_loop_t *loop);
    /* Stop accepting work; returns once every worker has finished. Called with no request in flight or at exit. */
    void (*stop)(pt_app_t *app);
    const char *description; /* for the start-up log: "wsgi, 8 worker threads" */
    const char *monitor_url; /* where this process's --gil-monitor listens, or NULL */
    void *data;
};

/*
 * Loads the application named in cfg (implemented in gateway/). Returns 0, or -1 after printing why (module not
 * found, attribute missing, not callable, interface not supported) with the Python traceback.
 */
int pt_app_load(const pt_config_t *cfg, uv_loop_t *loop, pt_app_t **app);
/* Releases the application and the interpreter, after stop. */
void pt_app_unload(pt_app_t *app);
/*
 * --interpreter host (or auto, with ponte's extension module installed): replaces this process with python3
 * running ponte as that module, with the same arguments (gateway/host.c). Returns only when this process is to
 * serve: 0 (embedded, or already inside python3), or -1 after saying why.
 */
int pt_app_exec_host(const pt_config_t *cfg, int argc, char **argv);
/* A version string for --version, e.g. "CPython 3.11.2". */
const char *pt_app_runtime_version(void);

/* The live GIL page (gateway/gil_monitor.html, compiled in), which a master serves under --processes. */
const char *pt_gil_page(size_t *len);

#endif
