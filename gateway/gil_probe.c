/*
 * The exact GIL probe: how the GIL's moves are observed, on every CPython ponte knows. Where the GIL is and how a
 * thread's stack is laid out differ per minor version: cpython.h's files know that, and only they.
 *
 * The GIL is a mutex and two condition variables (Python/ceval_gil.c, unchanged in shape from 3.11 to 3.15). A
 * thread that has just taken the GIL signals `switch_cond`; a thread dropping it signals `cond`; threads waiting
 * for it sleep in a timed wait on `cond` (a timeout means "ask the holder to drop"); a holder forced to drop waits
 * on `switch_cond` until another thread has really taken it.
 *
 * The interpreter imports pthread_cond_signal/_wait/_timedwait from glibc. gil_cond.c defines them where its calls
 * land first (the ponte executable, or libponte-gil.so preloaded into python3), records the event when the
 * condition variable is one of those two, and calls glibc's own function; this file tells it which two, through
 * pt_gil_cond_watch found with dlsym. Every other condition variable in the process costs one pointer comparison.
 *
 * Before it watches, the probe calibrates: it releases and retakes the GIL once on this thread while gil_cond.c
 * notes which condition variables the thread signals. They must be the two the version's layout names, in that
 * order (the drop's, then the take's); if they are not, the layout is wrong for this interpreter and the probe
 * stays off rather than record nonsense.
 *
 * The sampler (gil_sampler.c) asks this file for the GIL holder's Python stack. It reads the interpreter's memory
 * while the holder runs, so every object it reads may be freed or reused under it: each read goes through
 * process_vm_readv on ponte's own pid, which copies what is mapped and fails with EFAULT on what is not, instead of
 * a load that could fault. A torn read gives a wrong name at worst, never a crash; type pointers are checked.
 */
#include "cpython.h"
#include "gil_cond.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* The probe's events, as gil.c records them. */
static const pt_gil_cond_events_t events = {
    pt_gil_on_wait, pt_gil_on_wait_timeout, pt_gil_on_taken, pt_gil_on_dropped, pt_gil_on_forced,
};
static pt_gil_cond_watch_fn *watch;
static const pt_gil_park_events_t park_events = { pt_gil_on_parked, pt_gil_on_unparked };

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
pt_gil_probe_layout(char *why, size_t cap)
{
    unsigned long v = running_version();

    /* The layout compiled in is the built-for version's (cpython.h). Another minor keeps its GIL, thread states and
     * frames elsewhere: reading it there would record nonsense, so the probe refuses. */
    if ((v & 0xFFFF0000ul) != ((unsigned long)PY_VERSION_HEX & 0xFFFF0000ul)) {
        snprintf(why, cap, "CPython %lu.%lu is running; this ponte knows the GIL of %d.%d (gateway/cpython.h)", v >> 24,
                 v >> 16 & 0xFF, PY_MAJOR_VERSION, PY_MINOR_VERSION);
        return -1;
    }
    return 0;
}

/* Which two condition variables this thread signals while it releases and retakes the GIL: 0 when they are the
 * layout's, or -1 with why not. The caller holds the GIL. */
static int
calibrate(const pt_cpython_gil_t *gil, char *why, size_t cap)
{
    pt_gil_cond_calibrate_fn *calib = (pt_gil_cond_calibrate_fn *)dlsym(RTLD_DEFAULT, "pt_gil_cond_calibrate");
    pthread_cond_t *seen[4] = { NULL };
    PyThreadState *ts;
    int n;

    if (calib == NULL || calib(seen, 4) < 0) {
        snprintf(why, cap, "libponte-gil.so is not loaded (gateway/host.c preloads it)");
        return -1;
    }
    ts = PyEval_SaveThread();
    PyEval_RestoreThread(ts);
    n = calib(NULL, 0);
    if (n < 2 || seen[0] != gil->cond || seen[1] != gil->switch_cond) {
        snprintf(why, cap, "the GIL's condition variables are not where CPython %.*s's layout says (%d signalled)",
                 (int)strcspn(Py_GetVersion(), " "), Py_GetVersion(), n);
        return -1;
    }
    return 0;
}

static pt_cpython_gil_t gil;

int
pt_gil_probe_start(char *why, size_t cap)
{
    /* Without the layout, ponte times its own GIL calls instead. */
    if (pt_gil_probe_layout(why, cap) < 0 || pt_cpython_gil(&gil, why, cap) < 0 || calibrate(&gil, why, cap) < 0) {
        gil = (pt_cpython_gil_t){ NULL, NULL, NULL };
        return -1;
    }
    watch = (pt_gil_cond_watch_fn *)dlsym(RTLD_DEFAULT, "pt_gil_cond_watch");
    snprintf(why, cap, "the probe could not find glibc's pthread_cond_*");
    return watch != NULL && watch(gil.cond, gil.switch_cond, &events) == 0 ? 0 : -1;
}

void
pt_gil_probe_stop(void)
{
    if (watch != NULL) {
        watch(NULL, NULL, NULL);
    }
}

unsigned long
pt_gil_probe_interval_us(void)
{
    return gil.interval ? __atomic_load_n(gil.interval, __ATOMIC_RELAXED) : 0;
}

int
pt_gil_probe_set_interval_us(unsigned long us)
{
    if (gil.interval == NULL) {
        return -1;
    }
    /* What _PyEval_SetSwitchInterval does: one field, read by take_gil on every wait (an atomic load, from 3.13),
     * while this runs on the monitor's thread: written atomically. */
    __atomic_store_n(gil.interval, us, __ATOMIC_RELAXED);
    return 0;
}

/* ---- the holder's stack, for the sampler ---- */

int
pt_cpython_peek(void *dst, uintptr_t addr, size_t len)
{
    struct iovec local = { dst, len }, remote = { (void *)addr, len };

    return addr != 0 && process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == (ssize_t)len ? 0 : -1;
}

int
pt_gil_probe_stack(unsigned long *tid, pt_gil_frame_t *frames, int max)
{
    uintptr_t holder = pt_cpython_holder();

    return holder == 0 ? -1 : pt_cpython_stack(holder, tid, frames, max);
}

int
pt_gil_probe_parks(bool on)
{
    pt_gil_park_watch_fn *w = (pt_gil_park_watch_fn *)dlsym(RTLD_DEFAULT, "pt_gil_park_watch");

    return w != NULL && w(on ? &park_events : NULL) == 0 ? 0 : -1;
}

int
pt_gil_probe_threads(pt_gil_thread_state_t *out, int max)
{
    return pt_cpython_threads(out, max);
}

int
pt_gil_probe_stack_of(uintptr_t ts, unsigned long *tid, pt_gil_frame_t *frames, int max)
{
    return pt_cpython_stack(ts, tid, frames, max);
}

int
pt_gil_probe_str(uintptr_t addr, char *out, size_t cap)
{
    PyASCIIObject a;
    unsigned char raw[255];
    size_t len, k = 0, i;

    if (cap == 0 || pt_cpython_peek(&a, addr, sizeof(a)) < 0 || a.ob_base.ob_type != &PyUnicode_Type || !a.state.compact
        || a.state.kind != PyUnicode_1BYTE_KIND) {
        return -1; /* not a str, or one of 2- or 4-byte characters: not a name a sampler prints */
    }
    len = (size_t)a.length < sizeof(raw) ? (size_t)a.length : sizeof(raw);
    if (pt_cpython_peek(raw, addr + (a.state.ascii ? sizeof(PyASCIIObject) : sizeof(PyCompactUnicodeObject)), len)
        < 0) {
        return -1;
    }
    for (i = 0; i < len && k + 2 < cap; i++) { /* Latin-1 to UTF-8 */
        if (raw[i] < 0x80) {
            out[k++] = raw[i] < 0x20 ? '?' : (char)raw[i];
        } else {
            out[k++] = (char)(0xC0 | raw[i] >> 6);
            out[k++] = (char)(0x80 | (raw[i] & 0x3F));
        }
    }
    out[k] = '\0';
    return 0;
}
