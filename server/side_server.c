/*
 * A side server: server/ on a thread and loop of its own, serving C handlers.
 */
#include "side_server.h"

#include <string.h>

#include "listen.h"

static void
on_drain_nothing(pt_app_t *app, pt_request_t *req)
{
    /* The handlers answer at once or skip frames for a slow viewer: nothing waits to be resumed. */
}

static void
on_gone_nothing(pt_app_t *app, pt_request_t *req)
{
}

int
pt_side_server_listen(pt_side_server_t *s, const pt_config_t *cfg, const char *bind, const pt_app_t *app)
{
    int r = uv_loop_init(&s->loop);

    s->cfg = *cfg;
    s->cfg.binds[0] = bind;
    s->cfg.nbinds = 1;
    s->cfg.nfds = 0;
    s->cfg.access_log = false;
    s->cfg.max_body_size = 1024;
    s->app = *app;
    s->app.on_loop = true;
    s->app.streams_body = false;
    s->app.on_drain = on_drain_nothing;
    if (s->app.on_gone == NULL) {
        s->app.on_gone = on_gone_nothing;
    }
    if (r == 0) {
        r = pt_server_init(&s->srv, &s->loop, &s->cfg, &s->app);
    }
    if (r == 0) {
        r = pt_listen_all(&s->srv, &s->listeners, &s->nlisteners);
    }
    return r;
}

const char *
pt_side_server_url(const pt_side_server_t *s)
{
    return s->nlisteners > 0 ? s->listeners[0].url : "";
}

static void
side_main(void *arg)
{
    pt_side_server_t *s = arg;

    pt_set_loop_thread();
    if (s->on_thread != NULL) {
        s->on_thread();
    }
    uv_run(&s->loop, UV_RUN_DEFAULT);
}

int
pt_side_server_run(pt_side_server_t *s, void (*on_thread)(void))
{
    s->on_thread = on_thread;
    return uv_thread_create(&s->thread, side_main, s);
}

void
pt_side_server_respond(pt_request_t *req, const char *status, const char *type, const char *body, size_t len)
{
    pt_buf_t out = { 0 };
    pt_resp_ctx_t ctx = pt_req_resp_ctx(req);
    pt_header_t h[] = {
        { PT_SPAN("Content-Type"), { type, strlen(type) } },
        { PT_SPAN("Cache-Control"), PT_SPAN("no-store") },
        { PT_SPAN("Access-Control-Allow-Origin"), PT_SPAN("*") },
    };

    pt_resp_head(&req->resp, &ctx, &out, (pt_span_t){ status, strlen(status) }, h, 3, (int64_t)len);
    pt_resp_body(&req->resp, &out, body, len);
    pt_resp_end(&req->resp, &out);
    pt_req_send(req, &out, PT_SEND_END | PT_SEND_DONE);
    pt_buf_free(&out);
}

bool
pt_side_server_path_is(const pt_request_t *req, const char *path)
{
    return req->path.len == strlen(path) && memcmp(req->path.base, path, req->path.len) == 0;
}
