/*
 * The WSGI app as the server's pt_app_t: requests go to the worker pool, or (--threads 0) run on the loop thread.
 *
 * GIL: with worker threads the loop thread never takes the GIL after start-up (until shutdown). With --threads 0 it
 * takes it when a request needs the app and drops it before the loop blocks (a uv_prepare handle), so threads the
 * app starts still run while the server waits for the network.
 */
#include "gateway.h"

static struct {
    pt_app_t *base;
    pt_wsgi_t *wsgi;
    pt_pool_t *pool;
    PyThreadState **main_ts; /* the loop thread's state while it does not hold the GIL */
    bool loop_holds_gil;
    uv_prepare_t release_gil;
    uv_prepare_t wake_workers; /* wakes workers for the requests queued this loop turn, before libuv polls */
} wsgi_app;

/* ------------------------------------------------------------------------------------------------------------ */
/* The loop thread and the GIL (--threads 0) */

static void
loop_take_gil(void)
{
    if (!wsgi_app.loop_holds_gil) {
        pt_gil_acquire(*wsgi_app.main_ts);
        wsgi_app.loop_holds_gil = true;
    }
}

static void
loop_drop_gil(void)
{
    if (wsgi_app.loop_holds_gil) {
        *wsgi_app.main_ts = pt_gil_release();
        wsgi_app.loop_holds_gil = false;
    }
}

static void
on_before_poll(uv_prepare_t *p)
{
    loop_drop_gil();
}

/* ------------------------------------------------------------------------------------------------------------ */
/* pt_app_t */

static void
run_on_worker(void *arg, pt_request_t *req)
{
    pt_wsgi_handle(arg, req);
}

static void
on_wake_workers(uv_prepare_t *h)
{
    uv_prepare_stop(h);
    if (wsgi_app.pool != NULL) {
        pt_pool_wake(wsgi_app.pool);
    }
}

static void
wsgi_on_request(pt_app_t *app, pt_request_t *req)
{
    uint64_t w0;

    if (wsgi_app.pool != NULL) {
        pt_pool_submit(wsgi_app.pool, req);
        uv_prepare_start(&wsgi_app.wake_workers, on_wake_workers);
        return;
    }
    w0 = pt_gil_my_wait_ns();
    loop_take_gil();
    req->gil_wait_start_ns = pt_gil_my_wait_ns() - w0;
    pt_wsgi_handle(wsgi_app.wsgi, req);
}

static void
wsgi_on_drain(pt_app_t *app, pt_request_t *req)
{
    loop_take_gil();
    pt_wsgi_drain(wsgi_app.wsgi, req);
}

static void
wsgi_on_gone(pt_app_t *app, pt_request_t *req)
{
    loop_take_gil();
    pt_wsgi_gone(wsgi_app.wsgi, req);
}

static void
close_handle(uv_handle_t *h)
{
    if (h->loop != NULL && !uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

static void
wsgi_stop(pt_app_t *app)
{
    loop_drop_gil();
    if (wsgi_app.pool != NULL) {
        pt_pool_stop(wsgi_app.pool);
        wsgi_app.pool = NULL;
    }
    close_handle((uv_handle_t *)&wsgi_app.release_gil);
    close_handle((uv_handle_t *)&wsgi_app.wake_workers);
}

int
pt_wsgi_app_setup(pt_app_t *base, PyObject *app, const pt_config_t *cfg, uv_loop_t *loop, PyThreadState **main_ts)
{
    int r;

    wsgi_app.base = base;
    wsgi_app.main_ts = main_ts;
    if (pt_wsgi_init(&wsgi_app.wsgi, app, cfg) < 0) {
        return -1;
    }
    base->streams_body = cfg->threads > 0;
    base->on_loop = cfg->threads == 0;
    base->on_request = wsgi_on_request;
    base->on_drain = wsgi_on_drain;
    base->on_gone = wsgi_on_gone;
    base->stop = wsgi_stop;
    uv_prepare_init(loop, &wsgi_app.wake_workers);
    uv_prepare_init(loop, &wsgi_app.release_gil);
    uv_prepare_start(&wsgi_app.release_gil, on_before_poll);
    uv_unref((uv_handle_t *)&wsgi_app.release_gil);
    if (cfg->threads > 0) {
        r = pt_pool_start(&wsgi_app.pool, cfg->threads, run_on_worker, wsgi_app.wsgi);
        if (r < 0) {
            fprintf(stderr, "ponte: error: cannot start %d worker threads: %s\n", cfg->threads, uv_strerror(r));
            return -2;
        }
    }
    return 0;
}
