/*
 * A worker process's side of the control line to its master (see master.c): "ready" once it accepts, "beat" every
 * second under --timeout (a loop blocked by a request stops beating, and the master notices), and "retire <why>"
 * when it wants a successor: --max-requests reached, or a request in the app that has moved no bytes for --timeout
 * while the loop still runs (a worker thread stuck in the app; a response that streams slowly is not stuck). The
 * worker keeps serving until the master stops it, which it does once the successor is ready.
 */
#include "master.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static struct {
    const pt_config_t *cfg;
    pt_server_t *srv;
    uv_pipe_t ctl;
    uv_timer_t timer;
    uint64_t limit; /* --max-requests plus this worker's jitter; 0: none */
    bool retired, stuck;
} worker;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One line to the master. */
static void
say(const char *fmt, ...)
{
    char line[PT_CONTROL_LINE_MAX];
    va_list ap;
    int n;
    uv_buf_t buf;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line)) {
        pt_log_warning("worker %d: a line for the master did not fit: %.60s...", worker.cfg->worker_slot, line);
        return;
    }
    buf = uv_buf_init(line, (unsigned)n);
    /* A few bytes on a socketpair with an empty buffer: this does not block, and a master gone is no error here
     * (PR_SET_PDEATHSIG stops us then). */
    uv_try_write((uv_stream_t *)&worker.ctl, &buf, 1);
}

static void
check_stuck(void)
{
    uint64_t stuck_ms;
    pt_request_t *req;

    if (worker.stuck) {
        return;
    }
    req = pt_server_stuck_request(worker.srv, (uint64_t)(worker.cfg->timeout * 1000), &stuck_ms);
    if (req == NULL) {
        return;
    }
    worker.stuck = true;
    pt_log_error("%s:%d \"%.*s %.*s\" has been in the app for %.1fs with no bytes moving (--timeout %gs): this worker "
                 "will be replaced; where each thread is:",
                 req->remote_addr, req->remote_port, (int)req->method.len, req->method.base, (int)req->target.len,
                 req->target.base, (double)stuck_ms / 1000, worker.cfg->timeout);
    pt_log_flush();
    raise(SIGUSR2); /* the gateway dumps every thread's Python stack on SIGUSR2 (faulthandler) */
    say("retire timeout\n");
}

static void
on_timer(uv_timer_t *t)
{
    uint64_t served = atomic_load_explicit(&worker.srv->totals->requests, memory_order_relaxed); /* every loop's */

    if (worker.cfg->timeout > 0) {
        say("beat\n");
        check_stuck();
    }
    if (worker.limit && !worker.retired && served >= worker.limit) {
        worker.retired = true;
        say("retire --max-requests: %llu served\n", (unsigned long long)served);
    }
}

void
pt_worker_report_monitor(const char *url)
{
    say("monitor %s\n", url);
}

int
pt_worker_init(const pt_config_t *cfg, uv_loop_t *loop)
{
    worker.cfg = cfg;
    /* Die with the master, whatever kills it. */
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() == 1) {
        pt_log_error("worker %d: the master is gone", cfg->worker_slot);
        return -1;
    }
    if (uv_pipe_init(loop, &worker.ctl, 0) < 0 || uv_pipe_open(&worker.ctl, cfg->control_fd) < 0) {
        pt_log_error("worker %d: no control line to the master (fd %d)", cfg->worker_slot, cfg->control_fd);
        return -1;
    }
    uv_unref((uv_handle_t *)&worker.ctl);
    if (cfg->max_requests) {
        srand((unsigned)getpid() ^ (unsigned)time(NULL));
        worker.limit = cfg->max_requests
            + (cfg->max_requests_jitter ? (uint64_t)rand() % (cfg->max_requests_jitter + 1) : 0);
    }
    uv_timer_init(loop, &worker.timer);
    return 0;
}

void
pt_worker_ready(pt_server_t *srv)
{
    worker.srv = srv;
    say("ready\n");
    if (worker.cfg->timeout > 0 || worker.limit) {
        uint64_t ms = worker.cfg->timeout > 0 ? 1000 : 200;

        uv_timer_start(&worker.timer, on_timer, ms, ms);
        uv_unref((uv_handle_t *)&worker.timer);
    }
}
