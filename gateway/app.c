/*
 * The app as the server sees it (server/app.h): load it into a fresh interpreter, wire it to the server as WSGI
 * (wsgi_app.c) or ASGI (asgi.c), and unload it at exit. Also the GIL's report and trace timers on the loop.
 */
#include "gateway.h"

#include <stdlib.h>
#include <string.h>

#include "../server/log.h"

typedef struct {
    pt_app_t base;
    const pt_config_t *cfg;
    PyObject *app;
    PyThreadState *main_ts; /* the loop thread's state while it does not hold the GIL */
    char description[64];
    uv_timer_t gil_report;
    uv_timer_t gil_trace;
} pt_pyapp_t;

static void
on_gil_report(uv_timer_t *t)
{
    pt_gil_report(); /* reads the statistics' atomics: no GIL needed */
}

static void
on_gil_trace_flush(uv_timer_t *t)
{
    pt_gil_trace_flush();
}

/* How often the loop drains the --gil-trace rings. Each thread's ring holds 8192 spans (gil.c): at 20 ms that is
 * 400,000 spans/s per thread, where 250 ms (32,000/s) dropped a third of a Django ASGI run's spans (its executor
 * drops and retakes the GIL around every sqlite call). Only while tracing. */
#define TRACE_FLUSH_MS 20

/* The report and the trace flush start once the app is loaded, so that importing it is not the first interval. */
static void
start_gil_timers(pt_pyapp_t *pa, uv_loop_t *loop)
{
    uint64_t ms = (uint64_t)(pa->cfg->gil_report * 1000);

    if (pa->cfg->gil_trace != NULL) {
        uv_timer_init(loop, &pa->gil_trace);
        uv_timer_start(&pa->gil_trace, on_gil_trace_flush, TRACE_FLUSH_MS, TRACE_FLUSH_MS);
        uv_unref((uv_handle_t *)&pa->gil_trace);
    }
    if (ms > 0) {
        uv_timer_init(loop, &pa->gil_report);
        uv_timer_start(&pa->gil_report, on_gil_report, ms, ms);
        uv_unref((uv_handle_t *)&pa->gil_report);
        pt_gil_report(); /* the baseline */
    }
}

static void
stop_nothing(pt_app_t *app)
{
    /* ASGI: no worker threads; the loop stops with the server. */
}

static void
describe(pt_pyapp_t *pa, bool asgi)
{
    const pt_config_t *cfg = pa->cfg;

    if (asgi && cfg->loops > 1) {
        snprintf(pa->description, sizeof(pa->description), "%s, asyncio on %d loop threads",
                 cfg->interface == PT_IFACE_ASGI2 ? "asgi2" : "asgi", cfg->loops);
    } else if (cfg->interface == PT_IFACE_ASGI2) {
        snprintf(pa->description, sizeof(pa->description), "asgi2, asyncio on the loop thread");
    } else if (asgi) {
        snprintf(pa->description, sizeof(pa->description), "asgi, asyncio on the loop thread");
    } else if (cfg->threads > 0) {
        snprintf(pa->description, sizeof(pa->description), "wsgi, %d worker threads", cfg->threads);
    } else {
        snprintf(pa->description, sizeof(pa->description), "wsgi, on the loop thread");
    }
    pa->base.description = pa->description;
}

/* Wires the loaded app to the server as ASGI or WSGI. 0, or -1 after saying why. */
static int
setup_interface(pt_pyapp_t *pa, uv_loop_t *loop)
{
    const pt_config_t *cfg = pa->cfg;
    int asgi, r;

    if (cfg->interface == PT_IFACE_ASGI || cfg->interface == PT_IFACE_ASGI2) {
        asgi = 1;
    } else if (cfg->interface == PT_IFACE_WSGI) {
        asgi = 0;
    } else {
        asgi = pt_py_looks_like_asgi(pa->app);
    }
    if (asgi < 0) {
        pt_py_startup_error("cannot inspect '%s'%s", cfg->app, "");
        return -1;
    }
    describe(pa, asgi == 1);
    if (asgi == 1) {
        r = pt_asgi_setup(&pa->base, pa->app, cfg, loop, &pa->main_ts);
        if (r == -1) {
            pt_py_startup_error("cannot set up the asyncio loop for '%s'%s", cfg->app, "");
        } else if (r < 0) {
            fprintf(stderr, "ponte: error: the ASGI app '%s' failed to start (lifespan)\n", cfg->app);
        }
        return r < 0 ? -1 : 0;
    }
    r = pt_wsgi_app_setup(&pa->base, pa->app, cfg, loop, &pa->main_ts);
    if (r == -1) {
        pt_py_startup_error("cannot set up WSGI for '%s'%s", cfg->app, "");
    }
    return r < 0 ? -1 : 0;
}

int
pt_app_load(const pt_config_t *cfg, uv_loop_t *loop, pt_app_t **out)
{
    pt_pyapp_t *pa = NULL;
    char trace_path[4096];
    int r;

    if (cfg->gil_trace != NULL
        && (r = pt_gil_trace_open(pt_gil_process_path(cfg, cfg->gil_trace, trace_path, sizeof(trace_path)))) < 0) {
        fprintf(stderr, "ponte: error: --gil-trace %s: %s\n", trace_path, strerror(-r));
        return -1;
    }
    if (pt_py_start(cfg) < 0) {
        goto fail;
    }
    pt_log_info("Python: %s, %s%s", pt_app_runtime_version(),
                pt_py_hosted ? "inside python3 (--interpreter host)" : "embedded in ponte (--interpreter embedded)",
                pt_py_venv_note());
    {
        const char *gil = pt_gil_state_start();

        if (gil != NULL) {
            pt_log_info("GIL: %s", gil);
        }
    }
    pt_log_info("GIL probe: %s", pt_gil_start(cfg->gil_probe));
    if (pt_gil_routes_init(cfg->gil_probe ? cfg->gil_routes : 0) < 0) {
        fprintf(stderr, "ponte: error: out of memory for --gil-routes %d\n", cfg->gil_routes);
        goto fail;
    }
    pa = calloc(1, sizeof(*pa));
    if (pa == NULL || pt_py_prepare(cfg) < 0) {
        goto fail;
    }
    pa->cfg = cfg;
    pa->base.data = pa;
    pa->base.stop = stop_nothing;
    if (cfg->gil_monitor != NULL && (r = pt_gil_monitor_start(cfg, &pa->base.monitor_url)) < 0) {
        fprintf(stderr, "ponte: error: --gil-monitor %s: %s\n", cfg->gil_monitor, uv_strerror(r));
        goto fail;
    }
    pa->app = pt_py_load_app(cfg->app);
    if (pa->app == NULL || setup_interface(pa, loop) < 0) {
        goto fail;
    }
    pt_gil_state_app_loaded(loop);
    start_gil_timers(pa, loop);
    pt_log_info("GIL sampler: %s", pt_gil_sampler_start(cfg));
    /* From here on the loop thread holds the GIL only while it runs Python itself (--threads 0, ASGI). */
    pa->main_ts = pt_gil_release();
    *out = &pa->base;
    return 0;
fail:
    /* Nothing of ours is on the loop yet (the timers start last); the process exits after this. */
    if (pa != NULL) {
        Py_XDECREF(pa->app);
        free(pa);
    }
    pt_gil_sampler_stop();
    pt_gil_trace_close();
    return -1;
}

void
pt_app_unload(pt_app_t *app)
{
    pt_pyapp_t *pa = (pt_pyapp_t *)app;

    pt_gil_state_stop();
    pt_gil_sampler_stop();
    pt_gil_trace_close();
    pt_gil_acquire(pa->main_ts);
    Py_CLEAR(pa->app);
    /* Runs atexit handlers and finalises modules, as `python app.py` would on exit; inside python3, it does that
     * itself once _ponte_host.main() has returned. */
    if (!pt_py_hosted && Py_FinalizeEx() < 0) {
        pt_log_warning("errors while finalising Python");
    }
    free(pa);
}
