/*
 * The exact GIL probe for CPython 3.11: the only file that knows the interpreter's internals.
 *
 * 3.11 keeps its GIL at _PyRuntime.ceval.gil (Include/internal/pycore_gil.h): a mutex and two condition
 * variables. A thread that has just taken the GIL signals `switch_cond`; a thread dropping it signals `cond`;
 * threads waiting for it sleep in a timed wait on `cond` (a timeout means "ask the holder to drop"); a holder
 * forced to drop waits on `switch_cond` until another thread has really taken it.
 *
 * libpython imports pthread_cond_signal/_wait/_timedwait from glibc. ponte defines them in the executable (which
 * the dynamic linker searches first), records the event when the condition variable is one of those two, and
 * calls glibc's own function. Every other condition variable in the process costs one pointer comparison.
 * _PyRuntime is found with dlsym at run time rather than linked, so the executable does not copy the struct.
 *
 * Python 3.12 moved the GIL into the interpreter and 3.13 may run without one: this file is what changes then.
 */
#define Py_BUILD_CORE 1
#include "gateway.h"

#include <dlfcn.h>
#include <errno.h>
#include <internal/pycore_runtime.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

typedef int (*signal_fn)(pthread_cond_t *);
typedef int (*wait_fn)(pthread_cond_t *, pthread_mutex_t *);
typedef int (*timedwait_fn)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *);

static signal_fn real_signal;
static wait_fn real_wait;
static timedwait_fn real_timedwait;

/* The two GIL condition variables; NULL until pt_gil_probe_start (so nothing is recorded before). */
static pthread_cond_t *volatile gil_cond;
static pthread_cond_t *volatile gil_switch_cond;

static void
resolve(void)
{
    /* GLIBC_2.3.2 is the version libpython links against (nm -D shows pthread_cond_signal@GLIBC_2.3.2). */
    real_signal = (signal_fn)dlvsym(RTLD_NEXT, "pthread_cond_signal", "GLIBC_2.3.2");
    real_wait = (wait_fn)dlvsym(RTLD_NEXT, "pthread_cond_wait", "GLIBC_2.3.2");
    real_timedwait = (timedwait_fn)dlvsym(RTLD_NEXT, "pthread_cond_timedwait", "GLIBC_2.3.2");
    if (real_signal == NULL || real_wait == NULL || real_timedwait == NULL) {
        real_signal = (signal_fn)dlsym(RTLD_NEXT, "pthread_cond_signal");
        real_wait = (wait_fn)dlsym(RTLD_NEXT, "pthread_cond_wait");
        real_timedwait = (timedwait_fn)dlsym(RTLD_NEXT, "pthread_cond_timedwait");
    }
}

/* Exported from the executable (meson: export_dynamic) so that libpython's calls land here. */
int pthread_cond_signal(pthread_cond_t *c);
int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m);
int pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *t);

int
pthread_cond_signal(pthread_cond_t *c)
{
    if (real_signal == NULL) {
        resolve();
    }
    if (c == gil_switch_cond) {
        pt_gil_on_taken(); /* take_gil: signalled right after this thread took the GIL */
    } else if (c == gil_cond) {
        pt_gil_on_dropped(); /* drop_gil: signalled right after this thread released it */
    }
    return real_signal(c);
}

int
pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *t)
{
    int r;

    if (real_timedwait == NULL) {
        resolve();
    }
    if (c != gil_cond) {
        return real_timedwait(c, m, t);
    }
    pt_gil_on_wait(); /* take_gil: the GIL is held by another thread */
    r = real_timedwait(c, m, t);
    if (r == ETIMEDOUT) {
        pt_gil_on_wait_timeout(); /* an interval passed without a switch: the holder will be asked to drop */
    }
    return r;
}

int
pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
{
    if (real_wait == NULL) {
        resolve();
    }
    if (c == gil_switch_cond) {
        pt_gil_on_forced(); /* drop_gil after a drop request: wait until someone else has the GIL */
    }
    return real_wait(c, m);
}

/* The interpreter that is running: Py_Version, or what PONTE_GIL_PROBE_FAKE_VERSION ("3.12") pretends, which the
 * tests use to see the probe refuse a version it does not know. */
static unsigned long
running_version(void)
{
    const char *fake = getenv("PONTE_GIL_PROBE_FAKE_VERSION");
    unsigned major, minor;

    if (fake != NULL && sscanf(fake, "%u.%u", &major, &minor) == 2) {
        return (unsigned long)major << 24 | (unsigned long)minor << 16;
    }
    return Py_Version;
}

int
pt_gil_probe_start(char *why, size_t cap)
{
    _PyRuntimeState *rt = dlsym(RTLD_DEFAULT, "_PyRuntime");
    unsigned long v = running_version();

    /* This file reads 3.11's layout (_PyRuntime.ceval.gil). Another version keeps the GIL elsewhere, or has none:
     * reading it there would record nonsense, so the probe refuses, and ponte times its own GIL calls instead. */
    if ((v & 0xFFFF0000ul) != ((unsigned long)PY_VERSION_HEX & 0xFFFF0000ul)) {
        snprintf(why, cap, "CPython %lu.%lu is running; the probe knows the GIL of %d.%d only: see gateway/gil_probe.c",
                 v >> 24, v >> 16 & 0xFF, PY_MAJOR_VERSION, PY_MINOR_VERSION);
        return -1;
    }
    snprintf(why, cap, "the probe could not find the GIL");
    if (real_signal == NULL) {
        resolve();
    }
    if (rt == NULL || real_signal == NULL || real_wait == NULL || real_timedwait == NULL) {
        return -1;
    }
    gil_cond = &rt->ceval.gil.cond;
    gil_switch_cond = &rt->ceval.gil.switch_cond;
    return 0;
}

void
pt_gil_probe_stop(void)
{
    gil_cond = NULL;
    gil_switch_cond = NULL;
}

unsigned long
pt_gil_probe_interval_us(void)
{
    _PyRuntimeState *rt = dlsym(RTLD_DEFAULT, "_PyRuntime");

    return rt ? rt->ceval.gil.interval : 0;
}

void
pt_gil_probe_set_interval_us(unsigned long us)
{
    _PyRuntimeState *rt = dlsym(RTLD_DEFAULT, "_PyRuntime");

    if (rt != NULL) {
        /* What _PyEval_SetSwitchInterval does: one field, read by take_gil on every wait. */
        rt->ceval.gil.interval = us;
    }
}
