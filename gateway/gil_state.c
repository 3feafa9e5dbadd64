/*
 * Whether there is a GIL at all. A GIL build always has one. A free-threaded CPython (3.14t) has none, until it
 * turns it back on for good: PYTHON_GIL=1 (or -X gil=1) asks for it at start, and importing an extension module that
 * does not declare that it runs without the GIL (its Py_mod_gil slot) turns it on then, with a RuntimeWarning on
 * stderr that a server's log does not show. From then on threads take turns running Python, as on a GIL build: the
 * one thing a user of 3.14t must know about first.
 *
 * So: the state is read once Python has started and again once the app is imported (on the main thread, which can
 * name the modules that did it), then every WATCH_MS by a timer on the loop that reads one int of the GIL's and
 * nothing else. When that timer sees the GIL come back, a thread of its own (the loop thread must not wait for the
 * GIL) names the modules and logs it, within a second. The report, the monitor and /snapshot read the state here.
 */
#include "cpython.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../server/log.h"

#define WATCH_MS 250

static struct {
    _Atomic int state; /* pt_gil_state_t */
    char why[512];     /* written before `state` becomes PT_GIL_BACK (release), read after it (acquire) */
    uv_timer_t watch;
    uv_thread_t namer;
    bool watching, naming;
    uint64_t serving_ns; /* when the app was imported: "after N s of serving" */
} gs;

static const char *
clock_text(char *buf, size_t cap)
{
    time_t now = time(NULL);
    struct tm tm;

    strftime(buf, cap, "%H:%M:%S", localtime_r(&now, &tm));
    return buf;
}

/* The GIL is back, for the reason in gs.why: lock waits are the GIL's again, and the log says so, once. */
static void
mark_back(void)
{
    atomic_store_explicit(&gs.state, PT_GIL_BACK, memory_order_release);
    pt_gil_probe_parks(false);
    pt_log_warning("GIL: back on: %s. Threads take turns running Python again, as on a GIL build; the GIL view shows "
                   "them",
                   gs.why);
}

/* The GIL is back: says which modules turned it on and when. The caller is attached. */
static void
back_on(const char *when)
{
    char users[384];

    if (pt_cpython_gil_users(users, sizeof(users)) > 0) {
        snprintf(gs.why, sizeof(gs.why),
                 "CPython turned it on to import %s, which %s not declare that %s without the "
                 "GIL (Py_mod_gil), %s",
                 users, strchr(users, ',') ? "do" : "does", strchr(users, ',') ? "they run" : "it runs", when);
    } else {
        snprintf(gs.why, sizeof(gs.why), "CPython turned it on %s (PYTHON_GIL=1, -X gil=1, or a module that needs it)",
                 when);
    }
    mark_back();
}

static void
name_them(void *arg)
{
    PyGILState_STATE st = PyGILState_Ensure();
    char when[64], at[16];

    snprintf(when, sizeof(when), "at %s, after %.1f s of serving", clock_text(at, sizeof(at)),
             (double)(pt_gil_now() - gs.serving_ns) / 1e9);
    back_on(when);
    PyGILState_Release(st);
}

static void
on_watch(uv_timer_t *t)
{
    if (!pt_cpython_gil_on()) {
        return;
    }
    uv_timer_stop(t);
    gs.naming = uv_thread_create(&gs.namer, name_them, NULL) == 0;
    if (!gs.naming) {
        snprintf(gs.why, sizeof(gs.why), "CPython turned it on while serving");
        mark_back();
    }
}

const char *
pt_gil_state_start(void)
{
#ifdef Py_GIL_DISABLED
    if (pt_cpython_gil_on()) {
        snprintf(gs.why, sizeof(gs.why), "PYTHON_GIL=1 or -X gil=1 asked for it");
        atomic_store_explicit(&gs.state, PT_GIL_BACK, memory_order_release);
        return "on (free-threaded CPython, but PYTHON_GIL=1 or -X gil=1 asked for it)";
    }
    atomic_store_explicit(&gs.state, PT_GIL_NONE, memory_order_release);
    return "none (free-threaded CPython): threads run Python at once";
#else
    atomic_store_explicit(&gs.state, PT_GIL_BUILT, memory_order_release);
    return NULL;
#endif
}

void
pt_gil_state_app_loaded(uv_loop_t *loop)
{
    gs.serving_ns = pt_gil_now();
    if (atomic_load_explicit(&gs.state, memory_order_acquire) != PT_GIL_NONE) {
        return;
    }
    if (pt_cpython_gil_on()) {
        back_on("while the app was imported");
        return;
    }
    uv_timer_init(loop, &gs.watch);
    uv_timer_start(&gs.watch, on_watch, WATCH_MS, WATCH_MS);
    uv_unref((uv_handle_t *)&gs.watch);
    gs.watching = true;
}

void
pt_gil_state_stop(void)
{
    if (gs.watching) {
        if (!uv_is_closing((uv_handle_t *)&gs.watch)) { /* the server's shutdown may have closed it already */
            uv_close((uv_handle_t *)&gs.watch, NULL);
        }
        gs.watching = false;
    }
    if (gs.naming) {
        uv_thread_join(&gs.namer);
        gs.naming = false;
    }
}

pt_gil_state_t
pt_gil_state(const char **why)
{
    pt_gil_state_t s = (pt_gil_state_t)atomic_load_explicit(&gs.state, memory_order_acquire);

    if (why != NULL) {
        *why = s == PT_GIL_BACK ? gs.why : "";
    }
    return s;
}
