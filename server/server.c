/*
 * The server: the state one loop's connections share, and what is done to all of them at once.
 */
#include "server.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "h2.h"
#include "handoff.h"
#include "listen.h"
#include "ws.h"

int
pt_server_init(pt_server_t *srv, uv_loop_t *loop, const pt_config_t *cfg, pt_app_t *app)
{
    memset(srv, 0, sizeof(*srv));
    srv->loop = loop;
    srv->cfg = cfg;
    srv->app = app;
    srv->conn_budget = SIZE_MAX; /* pt_listen_all measures it */
    srv->totals = &srv->own_totals;
    pt_http_settings_init(&srv->parser_settings);
    srv->read_buf = malloc(PT_READ_BUF_SIZE);
    if (srv->read_buf == NULL) {
        return UV_ENOMEM;
    }
    srv->drain.link = offsetof(pt_conn_t, drain_link);
    srv->flush.link = offsetof(pt_conn_t, flush_link);
    srv->wake.link = offsetof(pt_conn_t, wake_link);
    uv_idle_init(loop, &srv->drain_idle);
    srv->drain_idle.data = srv;
    uv_prepare_init(loop, &srv->flush_prepare);
    srv->flush_prepare.data = srv;
    uv_prepare_init(loop, &srv->wake_prepare);
    srv->wake_prepare.data = srv;
    uv_timer_init(loop, &srv->accept_timer);
    srv->accept_timer.data = srv;
    uv_unref((uv_handle_t *)&srv->accept_timer);
    uv_timer_init(loop, &srv->accept_hold);
    srv->accept_hold.data = srv;
    uv_unref((uv_handle_t *)&srv->accept_hold);
    return pt_handoff_init(srv);
}

static void
close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

static void
close_walk(uv_handle_t *h, void *arg)
{
    close_handle(h);
}

void
pt_loop_close_all(uv_loop_t *loop)
{
    uv_walk(loop, close_walk, NULL);
}

void
pt_server_close(pt_server_t *srv)
{
    pt_handoff_close(srv);
    close_handle((uv_handle_t *)&srv->drain_idle);
    close_handle((uv_handle_t *)&srv->flush_prepare);
    close_handle((uv_handle_t *)&srv->wake_prepare);
    close_handle((uv_handle_t *)&srv->accept_timer);
    close_handle((uv_handle_t *)&srv->accept_hold);
    free(srv->read_buf);
    srv->read_buf = NULL;
    pt_buf_free(&srv->tls_plain);
}

void
pt_server_add_conn(pt_server_t *srv, pt_conn_t *c)
{
    c->prev = NULL;
    c->next = srv->conns;
    if (srv->conns) {
        srv->conns->prev = c;
    }
    srv->conns = c;
    srv->nconns++;
    atomic_fetch_add_explicit(&srv->totals->nconns, 1, memory_order_relaxed);
}

void
pt_server_remove_conn(pt_server_t *srv, pt_conn_t *c)
{
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        srv->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    srv->nconns--;
    atomic_fetch_sub_explicit(&srv->totals->nconns, 1, memory_order_relaxed);
    pt_todo_remove(&srv->drain, c);
    pt_todo_remove(&srv->flush, c);
    pt_todo_remove(&srv->wake, c);
    pt_listen_resume(srv); /* a descriptor, and a connection slot, came free */
}

void
pt_server_request_started(pt_server_t *srv)
{
    srv->nbusy++;
    atomic_fetch_add_explicit(&srv->totals->nbusy, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&srv->totals->requests, 1, memory_order_relaxed);
}

void
pt_server_request_ended(pt_server_t *srv)
{
    srv->nbusy--;
    atomic_fetch_sub_explicit(&srv->totals->nbusy, 1, memory_order_relaxed);
}

/* Graceful shutdown of one connection (see pt_server_shutdown). */
static void
server_stop_conn(pt_conn_t *c, uint64_t now)
{
    if (c->h2 != NULL) {
        if (c->state == PT_CONN_H2) {
            pt_h2_stop(c->h2); /* GOAWAY: the streams taken are answered, then it ends */
        }
    } else if (c->state == PT_CONN_IDLE && !c->app_busy) {
        /* Closing a connection the client is about to reuse loses its next request (RFC 9112 §9.6): wrk and most
         * clients do not retry. A quiet one closes now; a busy one gets its next answer with "Connection: close"
         * (new requests see srv->stopping), or closes when it stays quiet. */
        if (now - c->idle_since >= PT_SHUTDOWN_LINGER_MS) {
            pt_conn_close(c);
        } else {
            pt_conn_set_deadline(c, (double)(PT_SHUTDOWN_LINGER_MS - (now - c->idle_since)) / 1000.0);
        }
    } else if (c->ws != NULL) {
        pt_ws_stop(c->ws); /* close with 1001, going away */
    } else {
        /* Answer the request in progress with "Connection: close". */
        c->req.keep_alive = false;
    }
}

void
pt_server_shutdown(pt_server_t *srv)
{
    pt_conn_t *c, *next;
    uint64_t now = uv_now(srv->loop);

    srv->stopping = true;
    for (c = srv->conns; c != NULL; c = next) {
        next = c->next;
        server_stop_conn(c, now);
    }
    if (srv->nconns == 0 && srv->on_idle) {
        srv->on_idle(srv);
    }
}

pt_request_t *
pt_server_stuck_request(pt_server_t *srv, uint64_t ms, uint64_t *stuck_ms)
{
    uint64_t now = uv_now(srv->loop);
    pt_conn_t *c, *worst = NULL;

    for (c = srv->conns; c != NULL; c = c->next) {
        if (c->app_busy && c->ws == NULL && now - c->progress >= ms
            && (worst == NULL || c->progress < worst->progress)) {
            worst = c;
        }
    }
    if (worst == NULL) {
        return NULL;
    }
    *stuck_ms = now - worst->progress;
    return worst->h2 != NULL ? pt_h2_busy_request(worst->h2) : &worst->req;
}

void
pt_server_abort_all(pt_server_t *srv)
{
    pt_conn_t *c, *next;

    for (c = srv->conns; c != NULL; c = next) {
        next = c->next;
        pt_conn_close(c);
    }
}
