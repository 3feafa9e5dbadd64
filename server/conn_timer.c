/*
 * A connection's one timer. What it means is the connection's state's: the header timeout while a head arrives,
 * the client timeout while the app waits on the client, the keep-alive timeout between requests, the lingering
 * close; and, while a request body arrives, --min-body-rate checks. Deadlines move on every byte, so the timer is
 * re-armed lazily: it fires at the earliest deadline it was armed for, and starts again from the current one.
 */
#include "conn.h"

#include "h2.h"
#include "log.h"
#include "ws.h"

static void on_timer(uv_timer_t *t);

/* Arms the timer for the earlier of the state's deadline and the next body-rate check, unless it is due sooner. */
static void
conn_arm(pt_conn_t *c)
{
    uint64_t now = uv_now(c->srv->loop);
    uint64_t due = c->rate_due != 0 && c->rate_due < c->deadline ? c->rate_due : c->deadline;

    if (!uv_is_active((uv_handle_t *)&c->timer) || c->timer_due > due) {
        c->timer_due = due;
        uv_timer_start(&c->timer, on_timer, due > now ? due - now : 0, 0);
    }
}

void
pt_conn_set_deadline(pt_conn_t *c, double seconds)
{
    c->deadline = uv_now(c->srv->loop) + (uint64_t)(seconds * 1000);
    conn_arm(c);
}

/*
 * --min-body-rate, as Kestrel does it: once a grace period has passed, a request body must average that many bytes
 * a second, or the client is cut off. A stall is --client-timeout's; this is for the client that dribbles a byte
 * now and then to stay under it. The clock only runs while the server reads: not before "100 Continue" went out,
 * not while the app is behind (reading paused for back-pressure).
 */
#define BODY_RATE_GRACE_MS 5000

void
pt_conn_rate_start(pt_conn_t *c)
{
    if (c->srv->cfg->min_body_rate > 0 && !c->req.body_eof) {
        c->rate_since = uv_now(c->srv->loop);
        c->rate_base = c->req.body_received;
        c->rate_due = c->rate_since + BODY_RATE_GRACE_MS;
        conn_arm(c);
    }
}

/* At a rate check: whether the body is arriving too slowly; else schedules the next check. */
static bool
conn_body_too_slow(pt_conn_t *c, uint64_t now)
{
    uint64_t elapsed = now - c->rate_since, got = c->req.body_received - c->rate_base;

    if (c->message_done || (c->state != PT_CONN_BODY && c->state != PT_CONN_APP)) {
        c->rate_due = 0;
        return false;
    }
    if (!c->reading || !c->req.continue_sent) {
        pt_conn_rate_start(c); /* the server is not asking for the body now: the client is not to blame */
        return false;
    }
    if (got * 1000 < c->srv->cfg->min_body_rate * elapsed) {
        return true;
    }
    c->rate_due = now + 1000;
    return false;
}

void
pt_conn_progress(pt_conn_t *c)
{
    c->progress = uv_now(c->srv->loop);
    if (c->h2 == NULL) {
        c->deadline = c->progress + (uint64_t)(c->srv->cfg->client_timeout * 1000);
    } /* HTTP/2's timer weighs every stream (pt_h2_on_timer): it reads `progress` when it fires */
}

/* Whether a request in the app is held up by the client (slow body, or not reading the response). */
static bool
conn_client_stalled(pt_conn_t *c)
{
    return pt_req_waits_on_client(&c->req, c->srv->app->on_loop) || c->writes > 0 || c->wbuf.len > 0;
}

static void
on_timer(uv_timer_t *t)
{
    pt_conn_t *c = t->data;
    uint64_t now = uv_now(c->srv->loop);

    c->timer_due = 0;
    if (c->state == PT_CONN_WS) {
        pt_ws_on_timer(c->ws, now); /* pings, pongs, the closing handshake, a client that reads nothing */
        return;
    }
    if (c->rate_due != 0 && now >= c->rate_due && conn_body_too_slow(c, now)) {
        pt_log_info("%s:%d request body slower than --min-body-rate (%llu bytes in %.1f s): closing", c->remote_addr,
                    c->remote_port, (unsigned long long)(c->req.body_received - c->rate_base),
                    (double)(now - c->rate_since) / 1000.0);
        c->rate_due = 0;
        if (c->app_busy) {
            pt_req_client_gone(&c->req, PT_BODY_ERR_TIMEOUT);
            pt_conn_close(c);
        } else {
            pt_conn_reply_error(c, 408, "request body slower than --min-body-rate");
        }
        return;
    }
    if (now < c->deadline) {
        conn_arm(c);
        return;
    }
    switch (c->state) {
    case PT_CONN_IDLE: pt_conn_close(c); break;
    case PT_CONN_HEAD: pt_conn_reply_error(c, 408, "no complete request head within --header-timeout"); break;
    case PT_CONN_BODY:
        pt_log_info("%s:%d request body stalled for --client-timeout: closing", c->remote_addr, c->remote_port);
        pt_conn_close(c);
        break;
    case PT_CONN_APP:
    case PT_CONN_WS:
    case PT_CONN_OUTPUT:
        if (conn_client_stalled(c)) {
            pt_log_info("%s:%d client made no progress for --client-timeout: closing", c->remote_addr, c->remote_port);
            pt_req_client_gone(&c->req, PT_BODY_ERR_TIMEOUT);
            pt_conn_close(c);
        } else {
            pt_conn_set_deadline(c, c->srv->cfg->client_timeout);
        }
        break;
    case PT_CONN_H2: pt_h2_on_timer(c->h2, now); break;
    case PT_CONN_ENDING:
    case PT_CONN_SHUTDOWN:
    case PT_CONN_CLOSED: pt_conn_close(c); break;
    }
}
