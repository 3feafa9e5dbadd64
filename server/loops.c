/*
 * --loops N: the loops after the first, each on its thread (see loops.h).
 */
#include "loops.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

typedef enum {
    ORDER_NONE,
    ORDER_SHUTDOWN,
    ORDER_ABORT,
} order_t;

typedef struct {
    int index; /* 2..N, as the thread is named */
    uv_thread_t thread;
    bool thread_made;
    uv_loop_t loop;
    pt_server_t srv;
    pt_app_t *app;
    pt_listener_t *listeners;
    int nlisteners;
    int *fds;           /* main's descriptors of its listeners, dup'd for this loop; -1 once taken over */
    uv_async_t wake;    /* main -> this loop: look at `order` */
    _Atomic int order;  /* order_t */
    bool deaf;          /* its loop is about to close: orders are no longer sent (all.lock) */
    _Atomic bool ended; /* the loop has finished and released everything but the thread */
    bool attached;      /* the app's attach_loop was called: detach_loop is owed */
    int started;        /* 0 serving, -1 failed: set before `ready` is posted */
    uv_sem_t ready;
} extra_t;

static struct {
    extra_t *loops;
    int n;
    uv_mutex_t lock;  /* an order is sent to a loop that is not yet closing its libuv loop */
    uv_async_t ended; /* on main's loop: an extra loop ended */
    bool ended_open;
    void (*when_ended)(void *arg);
    void *when_ended_arg;
} all;

/* ---- on each extra loop's thread ---- */

static void
stop_loop(pt_server_t *srv)
{
    pt_loop_close_all(srv->loop);
}

static void
on_order(uv_async_t *a)
{
    extra_t *e = a->data;

    switch ((order_t)atomic_load(&e->order)) {
    case ORDER_SHUTDOWN:
        pt_listen_close_all(e->listeners, e->nlisteners);
        e->srv.on_idle = stop_loop;
        pt_server_shutdown(&e->srv);
        break;
    case ORDER_ABORT:
        pt_listen_close_all(e->listeners, e->nlisteners);
        pt_server_abort_all(&e->srv);
        stop_loop(&e->srv);
        break;
    case ORDER_NONE: break;
    }
}

/* Makes the thread's loop, the app's part in it, and its listeners. 0, or -1 after saying why. */
static int
extra_start(extra_t *e)
{
    int i, r;

    e->attached = true; /* detach_loop is owed even if attach_loop fails half way */
    if (e->app->attach_loop(e->app, &e->loop, e->index) < 0) {
        return -1;
    }
    r = uv_async_init(&e->loop, &e->wake, on_order);
    e->wake.data = e;
    uv_unref((uv_handle_t *)&e->wake);
    if (r == 0) {
        e->listeners = calloc((size_t)e->nlisteners, sizeof(*e->listeners));
        r = e->listeners != NULL ? 0 : UV_ENOMEM;
    }
    if (r < 0) {
        pt_log_error("loop %d: cannot start: %s", e->index, uv_strerror(r));
        return -1;
    }
    e->srv.listeners = e->listeners;
    for (i = 0; i < e->nlisteners; i++) {
        e->listeners[i].spare_fd = -1;
    }
    for (i = 0; i < e->nlisteners; i++) {
        int fd = e->fds[i];

        e->fds[i] = -1; /* the listener's handle owns it from here, whether or not it listens */
        e->srv.nlisteners = i + 1;
        e->listeners[i].tls = e->srv.cfg->listen_tls[i];
        if (pt_listen_fd(&e->srv, &e->listeners[i], fd) < 0) {
            return -1;
        }
    }
    return 0;
}

static void
extra_main(void *arg)
{
    extra_t *e = arg;
    char name[16];

    snprintf(name, sizeof(name), "loop-%d", e->index);
    pthread_setname_np(pthread_self(), name);
    pt_set_loop_thread();
    e->started = extra_start(e);
    uv_sem_post(&e->ready); /* main starts the next loop once this one listens, or stops them all */
    if (e->started == 0) {
        if (e->app->run != NULL) {
            e->app->run(e->app, &e->loop);
        } else {
            uv_run(&e->loop, UV_RUN_DEFAULT);
        }
    }
    uv_mutex_lock(&all.lock);
    e->deaf = true;
    uv_mutex_unlock(&all.lock);
    pt_loop_close_all(&e->loop);
    uv_run(&e->loop, UV_RUN_DEFAULT); /* the close callbacks */
    if (e->attached) {
        e->app->detach_loop(e->app, &e->loop);
    }
    pt_server_close(&e->srv);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    uv_loop_close(&e->loop);
    atomic_store(&e->ended, true);
    uv_async_send(&all.ended);
}

/* ---- on the main thread ---- */

static void
on_ended(uv_async_t *a)
{
    void (*done)(void *) = all.when_ended;
    int i;

    for (i = 0; i < all.n; i++) {
        if (!atomic_load(&all.loops[i].ended)) {
            return;
        }
    }
    if (done != NULL) {
        all.when_ended = NULL;
        done(all.when_ended_arg);
    }
}

/* Loop e's descriptors of main's listening sockets. 0, or -1 after saying why. */
static int
copy_fds(extra_t *e, const pt_listener_t *listeners, int n)
{
    int i, fd;

    e->fds = malloc((size_t)n * sizeof(int));
    if (e->fds == NULL) {
        pt_log_error("--loops: out of memory");
        return -1;
    }
    e->nlisteners = n;
    for (i = 0; i < n; i++) {
        e->fds[i] = -1;
    }
    for (i = 0; i < n; i++) {
        if (uv_fileno(&listeners[i].h.handle, &fd) < 0 || (e->fds[i] = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0) {
            pt_log_error("--loops: cannot share %s with loop %d", listeners[i].url, e->index);
            return -1;
        }
    }
    return 0;
}

static int
start_one(extra_t *e, pt_server_t *first, const pt_listener_t *listeners, int nlisteners)
{
    int r;

    if (copy_fds(e, listeners, nlisteners) < 0 || uv_sem_init(&e->ready, 0) != 0) {
        return -1;
    }
    if ((r = uv_loop_init(&e->loop)) < 0 || (r = pt_server_init(&e->srv, &e->loop, first->cfg, first->app)) < 0) {
        pt_log_error("loop %d: cannot start: %s", e->index, uv_strerror(r));
        return -1;
    }
    e->srv.totals = first->totals;
    e->srv.conn_budget = first->conn_budget;
    if ((r = uv_thread_create(&e->thread, extra_main, e)) < 0) {
        pt_log_error("loop %d: no thread for it: %s", e->index, uv_strerror(r));
        uv_loop_close(&e->loop);
        return -1;
    }
    e->thread_made = true;
    uv_sem_wait(&e->ready);
    if (e->started < 0) {
        uv_thread_join(&e->thread); /* it has released what it made */
        e->thread_made = false;
    }
    return e->started;
}

int
pt_loops_start(pt_server_t *first, const pt_listener_t *listeners, int nlisteners)
{
    int n = first->cfg->loops - 1, i;

    if (n <= 0) {
        return 0;
    }
    all.loops = calloc((size_t)n, sizeof(*all.loops));
    if (all.loops == NULL || uv_mutex_init(&all.lock) != 0 || uv_async_init(first->loop, &all.ended, on_ended) < 0) {
        pt_log_error("--loops: cannot start the loops");
        return -1;
    }
    all.ended_open = true;
    uv_unref((uv_handle_t *)&all.ended);
    for (i = 0; i < n; i++) {
        extra_t *e = &all.loops[i];

        e->index = i + 2;
        e->app = first->app;
        all.n = i + 1;
        if (start_one(e, first, listeners, nlisteners) < 0) {
            pt_loops_abort(); /* nothing is in flight yet: each ends at once */
            for (i = 0; i < all.n; i++) {
                if (all.loops[i].thread_made) {
                    uv_thread_join(&all.loops[i].thread);
                    all.loops[i].thread_made = false;
                }
            }
            return -1;
        }
    }
    return 0;
}

static void
order(order_t o)
{
    int i;

    if (all.n == 0) {
        return; /* --loops 1 */
    }
    uv_mutex_lock(&all.lock);
    for (i = 0; i < all.n; i++) {
        extra_t *e = &all.loops[i];

        if (e->thread_made && e->started == 0 && !e->deaf) {
            atomic_store(&e->order, o);
            uv_async_send(&e->wake);
        }
    }
    uv_mutex_unlock(&all.lock);
}

void
pt_loops_shutdown(void)
{
    order(ORDER_SHUTDOWN);
}

void
pt_loops_abort(void)
{
    order(ORDER_ABORT);
}

void
pt_loops_when_ended(void (*done)(void *arg), void *arg)
{
    all.when_ended = done;
    all.when_ended_arg = arg;
    if (all.ended_open) {
        uv_ref((uv_handle_t *)&all.ended); /* the main loop waits for the others */
    }
    on_ended(&all.ended);
}

bool
pt_loops_join(void)
{
    bool all_ended = true;
    int i, k;

    for (i = 0; i < all.n; i++) {
        extra_t *e = &all.loops[i];

        if (e->thread_made && !atomic_load(&e->ended)) {
            all_ended = false;
            continue;
        }
        if (e->thread_made) {
            uv_thread_join(&e->thread);
            e->thread_made = false;
        }
        for (k = 0; e->fds != NULL && k < e->nlisteners; k++) {
            if (e->fds[k] >= 0) {
                close(e->fds[k]);
            }
        }
        free(e->fds);
        e->fds = NULL;
        free(e->listeners);
        e->listeners = NULL;
    }
    if (all_ended && all.ended_open) {
        if (!uv_is_closing((uv_handle_t *)&all.ended)) { /* main's stop_loop may have closed it */
            uv_close((uv_handle_t *)&all.ended, NULL);
        }
        all.ended_open = false;
    }
    return all_ended;
}
