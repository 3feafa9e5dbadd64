/*
 * The exact GIL probe for CPython 3.11: the only file that knows the interpreter's internals.
 *
 * 3.11 keeps its GIL at _PyRuntime.ceval.gil (Include/internal/pycore_gil.h): a mutex and two condition
 * variables. A thread that has just taken the GIL signals `switch_cond`; a thread dropping it signals `cond`;
 * threads waiting for it sleep in a timed wait on `cond` (a timeout means "ask the holder to drop"); a holder
 * forced to drop waits on `switch_cond` until another thread has really taken it.
 *
 * The interpreter imports pthread_cond_signal/_wait/_timedwait from glibc. gil_cond.c defines them where its calls
 * land first (the ponte executable, or libponte-gil.so preloaded into python3), records the event when the
 * condition variable is one of those two, and calls glibc's own function; this file tells it which two, through
 * pt_gil_cond_watch found with dlsym. Every other condition variable in the process costs one pointer comparison.
 * _PyRuntime is found with dlsym at run time rather than linked, so the executable does not copy the struct.
 *
 * The sampler (gil_sampler.c) asks this file for the GIL holder's Python stack. It reads the interpreter's memory
 * while the holder runs, so every object it reads may be freed or reused under it: each read goes through
 * process_vm_readv on ponte's own pid, which copies what is mapped and fails with EFAULT on what is not, instead of
 * a load that could fault. A torn read gives a wrong name at worst, never a crash; type pointers are checked.
 *
 * Python 3.12 moved the GIL into the interpreter and 3.13 may run without one: this file is what changes then.
 */
#define Py_BUILD_CORE 1
#include "gateway.h"
#include "gil_cond.h"

#include <dlfcn.h>
#include <internal/pycore_frame.h>
#include <internal/pycore_runtime.h>
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

    /* This file reads 3.11's layout (_PyRuntime.ceval.gil, its thread states and frames). Another version keeps
     * them elsewhere, or has no GIL: reading it there would record nonsense, so the probe refuses. */
    if ((v & 0xFFFF0000ul) != ((unsigned long)PY_VERSION_HEX & 0xFFFF0000ul)) {
        snprintf(why, cap, "CPython %lu.%lu is running; the probe knows the GIL of %d.%d only: see gateway/gil_probe.c",
                 v >> 24, v >> 16 & 0xFF, PY_MAJOR_VERSION, PY_MINOR_VERSION);
        return -1;
    }
    return 0;
}

int
pt_gil_probe_start(char *why, size_t cap)
{
    _PyRuntimeState *rt = dlsym(RTLD_DEFAULT, "_PyRuntime");

    /* Without the layout, ponte times its own GIL calls instead. */
    if (pt_gil_probe_layout(why, cap) < 0) {
        return -1;
    }
    watch = (pt_gil_cond_watch_fn *)dlsym(RTLD_DEFAULT, "pt_gil_cond_watch");
    if (watch == NULL) {
        snprintf(why, cap, "libponte-gil.so is not loaded (gateway/host.c preloads it)");
        return -1;
    }
    snprintf(why, cap, "the probe could not find the GIL");
    return rt != NULL && watch(&rt->ceval.gil.cond, &rt->ceval.gil.switch_cond, &events) == 0 ? 0 : -1;
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

/* ---- the holder's stack, for the sampler ---- */

/* Copies len bytes at addr (this process, possibly freed) into dst: 0, or -1 if any byte was not readable. */
static int
peek(void *dst, uintptr_t addr, size_t len)
{
    struct iovec local = { dst, len }, remote = { (void *)addr, len };

    return addr != 0 && process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == (ssize_t)len ? 0 : -1;
}

int
pt_gil_probe_stack(unsigned long *tid, pt_gil_frame_t *frames, int max)
{
    static _PyRuntimeState *rt;
    PyThreadState ts;
    _PyCFrame cf;
    uintptr_t at, holder;
    int n = 0;

    if (rt == NULL) {
        rt = dlsym(RTLD_DEFAULT, "_PyRuntime");
    }
    if (rt == NULL || (holder = _Py_atomic_load_relaxed(&rt->gilstate.tstate_current)) == 0) {
        return -1;
    }
    *tid = 0;
    if (peek(&ts, holder, sizeof(ts)) < 0 || peek(&cf, (uintptr_t)ts.cframe, sizeof(cf)) < 0) {
        return 0; /* held, by a thread state that changed under the reader: a sample without frames */
    }
    *tid = ts.native_thread_id;
    for (at = (uintptr_t)cf.current_frame; at != 0 && n < max; n++) {
        _PyInterpreterFrame f;
        PyCodeObject code;

        /* Up to the code's fields that name it: the bytecode that follows is not needed. */
        if (peek(&f, at, offsetof(_PyInterpreterFrame, localsplus)) < 0
            || peek(&code, (uintptr_t)f.f_code, offsetof(PyCodeObject, co_linetable)) < 0
            || code.ob_base.ob_base.ob_type != &PyCode_Type) {
            break;
        }
        frames[n].code = (uintptr_t)f.f_code;
        frames[n].name = (uintptr_t)code.co_qualname;
        frames[n].file = (uintptr_t)code.co_filename;
        frames[n].line = code.co_firstlineno;
        at = (uintptr_t)f.previous;
    }
    return n;
}

int
pt_gil_probe_str(uintptr_t addr, char *out, size_t cap)
{
    PyASCIIObject a;
    unsigned char raw[255];
    size_t len, k = 0, i;

    if (cap == 0 || peek(&a, addr, sizeof(a)) < 0 || a.ob_base.ob_type != &PyUnicode_Type || !a.state.compact
        || a.state.kind != PyUnicode_1BYTE_KIND) {
        return -1; /* not a str, or one of 2- or 4-byte characters: not a name a sampler prints */
    }
    len = (size_t)a.length < sizeof(raw) ? (size_t)a.length : sizeof(raw);
    if (peek(raw, addr + (a.state.ascii ? sizeof(PyASCIIObject) : sizeof(PyCompactUnicodeObject)), len) < 0) {
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
