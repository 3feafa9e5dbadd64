/*
 * Internal declarations shared by the files of gateway/, the only part of ponte that includes Python.h.
 */
#ifndef PT_GATEWAY_H
#define PT_GATEWAY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdbool.h>

#include "py_compat.h"
#include <uv.h>

#include "../server/app.h"
#include "../server/config.h"
#include "../server/request.h"

/* ---- venv.c: the virtual environment served from ---- */
/* Its bin/python into python ("" when no venv is in use: --virtualenv, the one ponte is installed in, or
 * $VIRTUAL_ENV). 0, or -1 after printing why (not a venv, one of another CPython). */
int pt_venv_python(const pt_config_t *cfg, char *python, size_t cap);

/* ---- host.c: true inside python3 (--interpreter host), where the interpreter is already running and is not ours
 * to finalise ---- */
extern bool pt_py_hosted;

/* ---- gil.c: every GIL move of ponte's own threads goes through here (and gil_names.c, gil_report.c, gil_trace.c,
 * which read its per-thread records, gil_records.h) ---- */
/* Takes the GIL with this thread's state (a worker between requests, or the loop thread in --threads 0). */
void pt_gil_acquire(PyThreadState *ts);
/* Drops it; returns the state to pass back to pt_gil_acquire. */
PyThreadState *pt_gil_release(void);
/* Turns the probe on (GIL held) and checks it sees a release and a take; returns the mode, for the log. */
const char *pt_gil_start(bool on);
/* Names the calling thread in the GIL statistics ("loop", "worker-3") and gives its role ("loop", "worker", "app"). */
void pt_gil_thread_name(const char *name, const char *role);
/* gil_names.c: wraps threading's thread bootstrap so that threads the app starts appear under their Python names
 * (GIL held). */
int pt_gil_name_python_threads(void);
/* gil_report.c: logs one line: GIL busy %, waiters, switches/s, forced/s, per-thread hold/wait % since the last call. */
void pt_gil_report(void);

#define PT_GIL_MAX_THREADS 512
#define PT_GIL_PAIR_THREADS 128 /* hand-offs are counted per pair among the first 128 threads */
#define PT_GIL_HIST_BUCKETS 22  /* 1 µs .. 1 s by powers of two, and longer */
#define PT_GIL_MAX_PAIRS 1024
typedef struct {
    uint64_t hold, wait, acq, forced, timeouts; /* cumulative; nanoseconds for hold and wait */
    uint64_t cpu;                               /* the thread's CPU time, ns (as long as it runs) */
} pt_gil_snap_t;
/* The upper bound of histogram bucket k in seconds; -1 for the last (+Inf). */
double pt_gil_bucket_le_s(int k);
typedef struct {
    char name[32];
    char role[8];
    int tid;
    char state;                /* 'H' holding, 'W' waiting for the GIL, 'R' running without it */
    double hold_pct, wait_pct; /* of the sampled interval */
    double cpu_pct;            /* its CPU time over the interval: 100 is one core */
    pt_gil_snap_t total;
    uint64_t hold_hist[PT_GIL_HIST_BUCKETS], wait_hist[PT_GIL_HIST_BUCKETS]; /* cumulative counts */
} pt_gil_thread_view_t;
typedef struct {
    int from, to;   /* indexes into pt_gil_view_t.threads */
    uint64_t count; /* cumulative */
} pt_gil_pair_t;
typedef struct {
    bool exact;
    int gil;             /* pt_gil_state_t: with none, busy_pct is the threads running Python at once, x100 */
    const char *gil_why; /* what turned it back on (PT_GIL_BACK), else "" */
    int nthreads, waiters;
    unsigned long interval_us;
    double span_s, busy_pct, switches_per_s, forced_per_s;
    double cpu_pct;  /* the CPU time of the threads ponte has records of, over the interval: 100 is one core */
    uint64_t end_ns; /* when the view was taken (pt_gil_now); it covers the span_s before */
    uint64_t handoffs_total;
    double loop_busy_pct;   /* ASGI: share of the interval the loop ran Python callbacks (the loops' mean) */
    int loops;              /* ASGI: how many (--loops) */
    double loop_lag_max_ms; /* ASGI: the longest callback stretch (only for a sampler that takes_lag) */
    uint64_t loop_busy_total_ns;
    int npairs;
    pt_gil_pair_t pairs[PT_GIL_MAX_PAIRS];
    pt_gil_thread_view_t threads[PT_GIL_MAX_THREADS];
} pt_gil_view_t;
/* What the GIL did since the sampler's previous call (its own baseline). -1 on the first call (baseline only). */
typedef struct {
    uint64_t at, handoffs, loop_busy;
    bool takes_lag; /* this sampler reads (and resets) the loop-lag maximum */
    pt_gil_snap_t last[PT_GIL_MAX_THREADS];
} pt_gil_sampler_t;
int pt_gil_sample(pt_gil_sampler_t *sampler, pt_gil_view_t *view);
/* A file each process writes (--gil-trace, --gil-profile): FILE itself, or FILE.N for worker N under --processes,
 * so that workers do not write over each other. Into buf; returns buf. */
const char *pt_gil_process_path(const pt_config_t *cfg, const char *path, char *buf, size_t cap);
/* gil_trace.c: --gil-trace FILE: Chrome trace-event JSON (Perfetto, chrome://tracing). Open before the app loads;
 * flush from the loop (no GIL needed); close at exit. */
int pt_gil_trace_open(const char *path);
void pt_gil_trace_flush(void);
void pt_gil_trace_close(void);
/* A request span on the calling thread's track, from start_ns (pt_gil_now) to now. */
uint64_t pt_gil_now(void);
bool pt_gil_tracing(void);
/* ASGI: the loop ran Python for `ns` between two selects (loop lag). */
void pt_gil_loop_busy(uint64_t ns);
/* ASGI: how many loops add to it (--loops): the view shows their mean. */
void pt_gil_set_loops(int n);
/* The calling thread's total GIL wait so far (ns): deltas give a request's wait. */
uint64_t pt_gil_my_wait_ns(void);
/* The calling thread's GIL held and waited so far (ns), a hold or wait in progress included; returns the time it
 * read (pt_gil_now), so a caller that also needs "now" reads the clock once. */
uint64_t pt_gil_my_use(uint64_t *hold, uint64_t *wait);
void pt_gil_trace_request(uint64_t start_ns, const char *label);
/* The route (pt_gil_route_index) the calling thread's Python now works for, -1 for none; returns the one before. */
int pt_gil_set_route(int route);
/* The record of native thread tid: its index, and in *route the route it works for; -1 when ponte has none. */
int pt_gil_thread_route(unsigned long tid, int *route);
/* Whether native thread tid is waiting now (for the GIL, or without one for a lock), by its record. */
bool pt_gil_thread_waiting(unsigned long tid);

/* ---- gil_state.c: whether there is a GIL (free-threaded CPython has none, until a module turns it back on) ---- */
typedef enum {
    PT_GIL_BUILT, /* a GIL build: there always is one */
    PT_GIL_NONE,  /* free-threaded, and off: threads run Python at once */
    PT_GIL_BACK,  /* free-threaded, and on for good (pt_gil_state's why says what turned it on) */
} pt_gil_state_t;
/* Once Python has started: the state, for the log line "GIL: ...", or NULL on a GIL build (nothing to say). */
const char *pt_gil_state_start(void);
/* Once the app is imported (main thread, attached): checks again, then watches from a timer on the loop. */
void pt_gil_state_app_loaded(uv_loop_t *loop);
void pt_gil_state_stop(void);
/* Any thread, no GIL. */
pt_gil_state_t pt_gil_state(const char **why);

/* ---- gil_routes.c: the GIL and latency per route (--gil-routes) ---- */
#define PT_GIL_ROUTES_MAX 256 /* --gil-routes' bound */
int pt_gil_routes_init(int max);
bool pt_gil_routes_on(void);
/* A finished request: the GIL its app held, waited for to start and waited for while it ran (ns), and when it ended;
 * its route as pt_gil_route_index gave it, or -1 to find it from the request's path. */
void pt_gil_route_done(const pt_request_t *req, int route, uint64_t hold, uint64_t wait_start, uint64_t wait_run,
                       uint64_t end_ns);
/* The route of a request, as an index the sampler keeps (the route table grows by it); -1 without --gil-routes. */
int pt_gil_route_index(const pt_request_t *req);
/* The route at an index, into out; "(no request)" for -1. */
void pt_gil_route_name(int i, char *out, size_t cap);
/* The monitor's views: {"window_s", "max", "rows": [...]} for /snapshot, and /metrics' lines. */
void pt_gil_routes_json(pt_buf_t *b);
void pt_gil_routes_metrics(pt_buf_t *b);
/* Transitions, from the probe (any thread, inside CPython's GIL critical sections). */
void pt_gil_on_wait(void);
void pt_gil_on_wait_timeout(void);
void pt_gil_on_taken(void);
/* A thread parks in CPython's parking lot (a lock's wait, free-threaded), and stops. */
void pt_gil_on_parked(void);
void pt_gil_on_unparked(void);
/* Watch (true) or stop watching the parking lot's waits: 0, or -1 if it cannot be. */
int pt_gil_probe_parks(bool on);
void pt_gil_on_dropped(void);
void pt_gil_on_forced(void);

/* ---- gil_probe.c: how the GIL's moves are observed (each CPython's internals: cpython.h) ---- */
/* Starts the exact probe: 0, or -1 with why not in `why` (another CPython than the layout known here, no GIL found). */
int pt_gil_probe_start(char *why, size_t cap);
void pt_gil_probe_stop(void);
/* The switch interval, µs; 0 where the probe does not know this CPython's GIL (its fallback): unknown. */
unsigned long pt_gil_probe_interval_us(void);
/* sys.setswitchinterval without the GIL: the interpreter reads the field on every wait. 0, or -1 where the probe
 * does not know the GIL (nothing set). */
int pt_gil_probe_set_interval_us(unsigned long us);
/* Whether this file knows the running interpreter's layout: 0, or -1 with why not. */
int pt_gil_probe_layout(char *why, size_t cap);
/* One frame of the holder's stack: its code object, and that object's qualname and filename str objects (addresses
 * in this process, perhaps freed since: read them with pt_gil_probe_str) and first line. */
typedef struct {
    uintptr_t code, name, file;
    int line;
} pt_gil_frame_t;
/* The GIL holder's Python stack, innermost frame first, without the GIL: up to max frames, and the holder's native
 * thread id in *tid (0 if its state could not be read). The number of frames (0: the holder runs no Python),
 * PT_STACK_CHANGED (its state or innermost frame changed under the reader: nothing could be read), or -1 when no
 * thread holds the GIL. */
#define PT_STACK_CHANGED (-2)
int pt_gil_probe_stack(unsigned long *tid, pt_gil_frame_t *frames, int max);
/* A thread state of the main interpreter as read now: where it is, its native thread, and whether it is attached (may
 * run Python), detached, or suspended by a stop-the-world pause. */
enum {
    PT_THREAD_DETACHED,
    PT_THREAD_ATTACHED,
    PT_THREAD_SUSPENDED
};
typedef struct {
    uintptr_t at;
    unsigned long tid;
    int state;
} pt_gil_thread_state_t;
/* Without a GIL (free-threaded CPython): the main interpreter's thread states, up to max. Then the stack of one, as
 * pt_gil_probe_stack gives the holder's. */
int pt_gil_probe_threads(pt_gil_thread_state_t *out, int max);
int pt_gil_probe_stack_of(uintptr_t ts, unsigned long *tid, pt_gil_frame_t *frames, int max);
/* The text of the str object at addr, as UTF-8 in out: 0, or -1 if it is no longer a str (or not a 1-byte one). */
int pt_gil_probe_str(uintptr_t addr, char *out, size_t cap);

/* ---- gil_sampler.c: which Python code holds the GIL (--gil-sample-hz, --gil-profile) ---- */
/* Starts the sampler's thread when something shows what it finds; returns its state for the log ("100 Hz"). */
const char *pt_gil_sampler_start(const pt_config_t *cfg);
bool pt_gil_sampler_on(void);
/* Stops it and writes --gil-profile. */
void pt_gil_sampler_stop(void);
/* The live view: {"hz", "window_s", "samples", "held", "by_self", "by_total", "routes"} and /metrics' lines. */
void pt_gil_sampler_json(pt_buf_t *b);
void pt_gil_sampler_metrics(pt_buf_t *b);
/* The samples since the last call, as trace events, through the trace file's writer (gil.c). */
void pt_gil_sampler_trace(void (*write)(const char *fmt, ...), int pid, uint64_t t0);

/* ---- gil_monitor.c: the live view on its own thread and loop ---- */
/* s as a JSON string (also a Prometheus label value: both escape " and \). */
void pt_gil_json_str(pt_buf_t *b, const char *s);
/* Starts serving --gil-monitor; *url says where. 0 or a negative libuv error. */
int pt_gil_monitor_start(const pt_config_t *cfg, const char **url);

/* ---- str.c: strings made once at start-up, for WSGI and ASGI alike ---- */
typedef struct {
    /* WSGI environ keys and values */
    PyObject *REQUEST_METHOD, *SCRIPT_NAME, *PATH_INFO, *QUERY_STRING, *CONTENT_TYPE, *CONTENT_LENGTH, *SERVER_NAME,
        *SERVER_PORT, *SERVER_PROTOCOL, *REMOTE_ADDR, *REMOTE_PORT, *wsgi_input, *wsgi_url_scheme, *HTTP_1_0, *HTTP_1_1,
        *HTTP_2, *HTTPS, *on;
    /* ASGI scope and event keys and values */
    PyObject *type, *body, *more_body, *status, *headers, *state, *asgi, *http_version, *method, *scheme, *path,
        *raw_path, *query_string, *root_path, *client, *server, *http, *http_request, *v1_0, *v1_1, *v2, *websocket,
        *ws, *wss, *subprotocols, *extensions;
    /* methods, attribute names, constants */
    PyObject *GET, *POST, *HEAD, *PUT, *DELETE, *OPTIONS, *PATCH, *close, *fileno, *tell, *https, *empty, *empty_bytes;
} pt_strings_t;
extern pt_strings_t pt_str;
int pt_str_init(void);
/* The environ key for a request header name ("HTTP_USER_AGENT", "CONTENT_TYPE"), interned and cached. New ref. */
PyObject *pt_str_header_key(pt_span_t name);
/* A header name as ASGI wants it: lower-case bytes, shared when it is a common one. New ref. */
PyObject *pt_str_header_name_lower(pt_span_t name);
/* The method as a str, shared for the common ones. New ref. */
PyObject *pt_str_method(pt_span_t method);

/* ---- wsgi.c ---- */
typedef struct pt_wsgi_s pt_wsgi_t;
int pt_wsgi_init(pt_wsgi_t **w, PyObject *app, const pt_config_t *cfg);
/* Runs one request to its end (or, on the loop thread, until it must wait for the client: see on_drain). */
void pt_wsgi_handle(pt_wsgi_t *w, pt_request_t *req);
void pt_wsgi_drain(pt_wsgi_t *w, pt_request_t *req);
void pt_wsgi_gone(pt_wsgi_t *w, pt_request_t *req);

/* ---- wsgi_environ.c: the environ of a request ---- */
typedef struct {
    const pt_config_t *cfg;
    PyObject *template; /* what every environ shares; each thread copies it from its own copy of it */
} pt_environ_t;
int pt_environ_init(pt_environ_t *e, const pt_config_t *cfg);
/* The environ of req, with `input` as wsgi.input. New ref, or NULL with an exception set. */
PyObject *pt_environ_new(pt_environ_t *e, const pt_request_t *req, PyObject *input);

/* ---- wsgi_input.c: wsgi.input ---- */
extern PyTypeObject pt_input_type;
PyObject *pt_input_new(void);
/* Points a (reused) input stream at a request; NULL detaches it. */
void pt_input_attach(PyObject *input, pt_request_t *req);

/* ---- wsgi_file.c: wsgi.file_wrapper ---- */
extern PyTypeObject pt_file_wrapper_type;
typedef struct {
    PyObject_HEAD
    PyObject *filelike;
    Py_ssize_t blksize;
} pt_file_wrapper_t;
/* Whether the wrapper holds a regular file sendfile(2) can send: 0 with its descriptor, the file's position and
 * the bytes from there to its end; -1 (no exception) to iterate it instead. */
int pt_file_wrapper_regular(pt_file_wrapper_t *fw, int *fd, off_t *offset, size_t *count);

/* ---- pool.c: worker threads ---- */
typedef struct pt_pool_s pt_pool_t;
typedef void (*pt_pool_fn)(void *arg, pt_request_t *req);
int pt_pool_start(pt_pool_t **pool, int nthreads, pt_pool_fn fn, void *arg);
void pt_pool_submit(pt_pool_t *pool, pt_request_t *req);
void pt_pool_wake(pt_pool_t *pool);
void pt_pool_stop(pt_pool_t *pool);

/* ---- wsgi_app.c: the WSGI app as the server's pt_app_t ---- */
/* Fills in base for WSGI: the pool, or the loop thread (which then takes the GIL from *main_ts). 0; -1 with an
 * exception set; -2 after printing why. */
int pt_wsgi_app_setup(pt_app_t *base, PyObject *app, const pt_config_t *cfg, uv_loop_t *loop, PyThreadState **main_ts);

/* ---- asgi.c (see asgi.h for the rest of ASGI) ---- */
/* Creates the asyncio loop on libuv and fills in base for ASGI. -1 with an exception set on failure; -2 when the
 * lifespan startup failed (already reported). */
int pt_asgi_setup(pt_app_t *base, PyObject *app, const pt_config_t *cfg, uv_loop_t *loop, PyThreadState **main_ts);

/* ---- py.c: the interpreter ---- */
/* Starts the interpreter as cfg->python_executable or a venv's python (venv.c), signals left to the server. 0, or
 * -1 after printing why. */
int pt_py_start(const pt_config_t *cfg);
/* ", venv PATH" when sys.prefix is a virtual environment, else "" (for the start-up log; GIL held). */
const char *pt_py_venv_note(void);
/* Interned strings, --app-dir on sys.path, Python thread names, the SIGUSR2 stack dump. 0, or -1 after printing. */
int pt_py_prepare(const pt_config_t *cfg);
/* The callable named by "module:attr" or "file.py:attr". New ref, or NULL after printing why. */
PyObject *pt_py_load_app(const char *spec);
/* Whether app is ASGI (a coroutine function, or an object whose __call__ is one): 1, 0, or -1 on error. */
int pt_py_looks_like_asgi(PyObject *app);
/* "ponte: error: " + fmt (with a and b), and the Python traceback when an exception is set. */
void pt_py_startup_error(const char *fmt, const char *a, const char *b);
/* Runs Python source in a fresh namespace (GIL held); returns the namespace, or NULL with an exception set. */
PyObject *pt_py_exec(const char *src);
/* Logs "what" plus the current Python exception's traceback, and clears it. */
void pt_py_log_exception(const char *what, const pt_request_t *req);

#endif
