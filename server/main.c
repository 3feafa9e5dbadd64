/*
 * ponte: parse the command line, load the app, listen, run the loop, shut down gracefully on SIGTERM/SIGINT.
 * pt_main is the whole of it: main() here, and _ponte_host.main() in the extension module that runs it inside
 * /usr/bin/python3 (gateway/host.c; this file is compiled for each).
 */
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "app.h"
#include "config.h"
#include "server.h"
#include "listen.h"
#include "log.h"
#include "loopback_load.h"
#include "loops.h"
#include "main.h"
#include "master.h"
#include "tls.h"

typedef struct {
    pt_config_t cfg;
    uv_loop_t *loop;
    pt_server_t srv;
    pt_app_t *app;
    pt_listener_t *listeners;
    int nlisteners;
    uv_signal_t sigint, sigterm, sighup;
    uv_timer_t flush_timer;
    uv_timer_t trim_timer;
    uv_work_t trim_work;
    bool trimming;
    uv_timer_t grace_timer;
    int signals;
} pt_main_t;

static pt_main_t ponte;

/*
 * glibc returns the top of the heap to the kernel whenever more than 128 KiB is free there, and serves every
 * allocation above an adaptive threshold with its own mmap. A server that builds a 64 KiB response or reads a
 * 1 MiB body per request then pays brk/mmap and fresh page faults on every request: measured here, ASGI streaming
 * ran at a quarter of its speed and uploads at 40% (docs/benchmarks.md). Keep up to 32 MiB of free heap, and take
 * allocations below 4 MiB from the heap. A MALLOC_* environment variable set by the user wins.
 */
static void
tune_malloc(void)
{
    if (getenv("MALLOC_TRIM_THRESHOLD_") == NULL) {
        mallopt(M_TRIM_THRESHOLD, 32 * 1024 * 1024);
    }
    if (getenv("MALLOC_MMAP_THRESHOLD_") == NULL) {
        mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
    }
    if (getenv("MALLOC_TOP_PAD_") == NULL) {
        mallopt(M_TOP_PAD, 1024 * 1024);
    }
}

/*
 * Every 10 s, memory freed inside malloc's heaps goes back to the system. The heaps' tops are trimmed on their own,
 * but not the holes behind live blocks, and with worker threads those holes keep growing: buffers one thread
 * allocates and another frees land in the second thread's cache and are then reused for blocks that live on.
 * Measured with bench/soak (a million mixed requests, --threads 8): without this RSS rose from 17 to 29 MiB after
 * the warm-up; with it, from 14.7 to 15.7 MiB (docs/benchmarks.md, "Soak"). A trim walks every heap (about 5 ms
 * here), so it runs on libuv's thread pool, not on the loop: it locks one heap at a time, and only the threads
 * using that heap wait, briefly.
 */
#define TRIM_EVERY_MS 10000

static void
trim_work(uv_work_t *w)
{
    malloc_trim(1024 * 1024);
}

static void
trim_done(uv_work_t *w, int status)
{
    ponte.trimming = false;
}

static void
on_trim(uv_timer_t *t)
{
    if (!ponte.trimming && uv_queue_work(ponte.loop, &ponte.trim_work, trim_work, trim_done) == 0) {
        ponte.trimming = true;
    }
}

/* Everything is closed or closing: let uv_run return. */
static void
stop_loop(void)
{
    pt_loop_close_all(ponte.loop);
}

static void
stop_loop_cb(void *arg)
{
    stop_loop();
}

/* Every loop's connections are closed (the other loops', if any, have ended): the app's exit, then the loop's. */
static void
on_loops_ended(void *arg)
{
    pt_log_info("all connections closed");
    if (ponte.app->before_exit != NULL) {
        ponte.app->before_exit(ponte.app, stop_loop_cb, NULL);
    } else {
        stop_loop();
    }
}

static void
on_server_idle(pt_server_t *srv)
{
    pt_loops_when_ended(on_loops_ended, NULL);
}

/* Requests in the app, in every loop. */
static size_t
busy(void)
{
    return atomic_load_explicit(&ponte.srv.totals->nbusy, memory_order_relaxed);
}

static void
on_grace_expired(uv_timer_t *t)
{
    pt_log_warning("--graceful-timeout (%gs) expired with %zu request(s) in flight: closing their connections",
                   ponte.cfg.graceful_timeout, busy());
    pt_loops_abort();
    pt_server_abort_all(&ponte.srv);
    stop_loop();
}

static void
on_signal(uv_signal_t *s, int signum)
{
    if (++ponte.signals > 1) {
        pt_log_warning("second %s: stopping now", strsignal(signum));
        pt_loops_abort();
        pt_server_abort_all(&ponte.srv);
        stop_loop();
        return;
    }
    pt_log_info("%s: stopping; finishing %zu request(s) in flight (up to %gs)", strsignal(signum), busy(),
                ponte.cfg.graceful_timeout);
    pt_loops_shutdown();
    pt_listen_close_all(ponte.listeners, ponte.nlisteners);
    uv_timer_start(&ponte.grace_timer, on_grace_expired, (uint64_t)(ponte.cfg.graceful_timeout * 1000), 0);
    uv_unref((uv_handle_t *)&ponte.grace_timer);
    ponte.srv.on_idle = on_server_idle;
    pt_server_shutdown(&ponte.srv);
}

/* SIGHUP in a lone process (or a worker): the TLS certificate and key are read again, for the connections that come
 * next; those open keep theirs. A certificate that no longer loads leaves the one in use. (Under --processes the
 * master's SIGHUP replaces the workers, which load everything anew.) */
static void
on_sighup(uv_signal_t *s, int signum)
{
    pt_tls_ctx_t *tls;

    if (ponte.cfg.ssl_certfile == NULL) {
        pt_log_info("SIGHUP: nothing to reload (no TLS certificate; --processes reloads the app on SIGHUP)");
        return;
    }
    tls = pt_tls_ctx_from_config(&ponte.cfg);
    if (tls == NULL) {
        pt_log_warning("SIGHUP: the TLS certificate in use stays (the new one did not load: see above)");
        return;
    }
    pt_tls_ctx_use(tls);
    pt_log_info("SIGHUP: TLS certificate reloaded from %s; new connections get it", ponte.cfg.ssl_certfile);
}

static void
on_flush(uv_timer_t *t)
{
    pt_log_flush();
}

/* Loads the app and listens. 0, or 1 after saying why. */
static int
start_serving(void)
{
    int r, i;

    if (ponte.cfg.worker_slot && pt_worker_init(&ponte.cfg, ponte.loop) < 0) {
        return 1;
    }
    if (pt_app_load(&ponte.cfg, ponte.loop, &ponte.app) < 0) {
        return 1;
    }
    if (ponte.cfg.worker_slot && ponte.app->monitor_url != NULL) {
        pt_worker_report_monitor(ponte.app->monitor_url);
    }
    r = pt_server_init(&ponte.srv, ponte.loop, &ponte.cfg, ponte.app);
    if (r < 0) {
        pt_log_error("cannot start: %s", uv_strerror(r));
        return 1;
    }
    if (ponte.cfg.ssl_certfile != NULL) {
        pt_tls_ctx_t *tls = pt_tls_ctx_from_config(&ponte.cfg);

        if (tls == NULL) {
            ponte.app->stop(ponte.app);
            pt_app_unload(ponte.app);
            return 1;
        }
        pt_tls_ctx_use(tls);
    }
    r = pt_listen_all(&ponte.srv, &ponte.listeners, &ponte.nlisteners);
    if (r < 0) {
        ponte.app->stop(ponte.app);
        pt_app_unload(ponte.app);
        return 1;
    }
    if (ponte.cfg.loops > 1 && ponte.app->attach_loop == NULL) {
        pt_log_error("--loops runs ASGI apps on several event loops; this app (%s) runs its Python on --threads",
                     ponte.app->description);
        r = -1;
    } else {
        r = pt_loops_start(&ponte.srv, ponte.listeners, ponte.nlisteners);
    }
    if (r < 0) {
        pt_listen_close_all(ponte.listeners, ponte.nlisteners);
        ponte.app->stop(ponte.app);
        pt_app_unload(ponte.app);
        return 1;
    }
    pt_load_set_target(ponte.listeners, ponte.nlisteners); /* for the GIL page's load buttons */
    uv_signal_init(ponte.loop, &ponte.sigint);
    uv_signal_init(ponte.loop, &ponte.sigterm);
    uv_signal_start(&ponte.sigint, on_signal, SIGINT);
    uv_signal_start(&ponte.sigterm, on_signal, SIGTERM);
    uv_signal_init(ponte.loop, &ponte.sighup);
    uv_signal_start(&ponte.sighup, on_sighup, SIGHUP);
    uv_timer_init(ponte.loop, &ponte.grace_timer);
    uv_timer_init(ponte.loop, &ponte.flush_timer);
    uv_timer_start(&ponte.flush_timer, on_flush, 1000, 1000);
    uv_unref((uv_handle_t *)&ponte.flush_timer);
    uv_timer_init(ponte.loop, &ponte.trim_timer);
    uv_timer_start(&ponte.trim_timer, on_trim, TRIM_EVERY_MS, TRIM_EVERY_MS);
    uv_unref((uv_handle_t *)&ponte.trim_timer);
    for (i = 0; i < ponte.nlisteners; i++) {
        pt_log_info("listening on %s", ponte.listeners[i].url);
    }
    pt_log_info("serving %s (%s)", ponte.cfg.app, ponte.app->description);
    if (ponte.cfg.worker_slot) {
        pt_worker_ready(&ponte.srv);
    }
    return 0;
}

/* The loop has stopped: no connection or request is left. Stops the workers and the interpreter. */
static void
finish(void)
{
    int i;

    ponte.app->stop(ponte.app);
    pt_app_unload(ponte.app);
    uv_run(ponte.loop, UV_RUN_DEFAULT); /* run the close callbacks */
    for (i = 0; i < ponte.nlisteners; i++) {
        if (ponte.listeners[i].owned) {
            remove(ponte.listeners[i].name);
        }
    }
    free(ponte.listeners);
    pt_server_close(&ponte.srv);
    pt_tls_ctx_use(NULL);
    uv_loop_close(ponte.loop);
    pt_log_info("stopped");
    pt_log_flush();
}

int
pt_main(int argc, char **argv)
{
    static char stdout_buf[64 * 1024];
    int r;

    tune_malloc();
    r = pt_config_parse(&ponte.cfg, argc, argv);
    if (r != 0) {
        return r > 0 ? 0 : 2;
    }
    pt_log_level = ponte.cfg.log_level;
    pt_log_gil_wait = ponte.cfg.access_log_gil;
    setvbuf(stdout, stdout_buf, _IOFBF, sizeof(stdout_buf));
    signal(SIGPIPE, SIG_IGN);

    if (ponte.cfg.processes > 0) {
        return pt_master_run(&ponte.cfg, argc, argv);
    }
    if (pt_app_exec_host(&ponte.cfg, argc, argv) < 0) {
        return 1;
    }
    ponte.loop = uv_default_loop();
    pt_set_loop_thread();
    if (start_serving() != 0) {
        return 1;
    }
    if (ponte.app->run != NULL) {
        ponte.app->run(ponte.app, ponte.loop);
    } else {
        uv_run(ponte.loop, UV_RUN_DEFAULT);
    }
    if (!pt_loops_join() || busy() > 0) {
        /*
         * Forced stop (graceful timeout or second signal) with requests still in the app: their threads are stuck
         * in Python and cannot be joined, and finalising the interpreter under them would crash. Leave now.
         */
        pt_log_warning("exiting with %zu request(s) still running in the app", busy());
        pt_log_flush();
        _exit(0);
    }
    finish();
    return 0;
}

#ifndef PT_PYTHON_MODULE
int
main(int argc, char **argv)
{
    return pt_main(argc, argv);
}
#endif
