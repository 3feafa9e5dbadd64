/*
 * CPython 3.11's internals, as cpython.h asks for them (Include/internal/pycore_gil.h, pycore_runtime.h,
 * pycore_frame.h of the interpreter built for).
 *
 * The GIL is one per process, at _PyRuntime.ceval.gil; the thread state holding it is
 * _PyRuntime.gilstate.tstate_current (NULL while nobody holds it). A thread state's frames hang from its _PyCFrame
 * (tstate->cframe->current_frame), and each frame names its code object in f_code.
 *
 * _PyRuntime is found with dlsym rather than linked, so that the executable does not copy the struct into itself.
 */
#define Py_BUILD_CORE 1
#include "cpython.h"

#include <dlfcn.h>
#include <internal/pycore_frame.h>
#include <internal/pycore_runtime.h>
#include <stdio.h>

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030C0000
#error "cpython_311.c is CPython 3.11's: gateway/meson.build picks the file for the version built for"
#endif

static _PyRuntimeState *
runtime(void)
{
    static _PyRuntimeState *rt;

    if (rt == NULL) {
        rt = dlsym(RTLD_DEFAULT, "_PyRuntime");
    }
    return rt;
}

int
pt_cpython_gil(pt_cpython_gil_t *gil, char *why, size_t cap)
{
    _PyRuntimeState *rt = runtime();

    if (rt == NULL) {
        snprintf(why, cap, "_PyRuntime not found");
        return -1;
    }
    *gil = (pt_cpython_gil_t){ &rt->ceval.gil.cond, &rt->ceval.gil.switch_cond, &rt->ceval.gil.interval };
    return 0;
}

int
pt_cpython_threads(pt_gil_thread_state_t *out, int max)
{
    return 0; /* no attached state: the GIL's holder is the thread that runs Python */
}

bool
pt_cpython_gil_on(void)
{
    return true; /* 3.11 has no free-threaded build */
}

int
pt_cpython_gil_users(char *out, size_t cap)
{
    if (cap > 0) {
        out[0] = '\0';
    }
    return 0;
}

uintptr_t
pt_cpython_holder(void)
{
    _PyRuntimeState *rt = runtime();

    return rt ? _Py_atomic_load_relaxed(&rt->gilstate.tstate_current) : 0;
}

int
pt_cpython_stack(uintptr_t holder, unsigned long *tid, pt_gil_frame_t *frames, int max)
{
    PyThreadState ts;
    _PyCFrame cf;
    uintptr_t at;
    int n = 0;

    *tid = 0;
    if (pt_cpython_peek(&ts, holder, sizeof(ts)) < 0 || pt_cpython_peek(&cf, (uintptr_t)ts.cframe, sizeof(cf)) < 0) {
        return PT_STACK_CHANGED; /* held, by a thread state that changed under the reader */
    }
    *tid = ts.native_thread_id;
    for (at = (uintptr_t)cf.current_frame; at != 0 && n < max; n++) {
        _PyInterpreterFrame f;
        PyCodeObject code;

        /* Up to the code's fields that name it: the bytecode that follows is not needed. */
        if (pt_cpython_peek(&f, at, offsetof(_PyInterpreterFrame, localsplus)) < 0
            || pt_cpython_peek(&code, (uintptr_t)f.f_code, offsetof(PyCodeObject, co_linetable)) < 0
            || code.ob_base.ob_base.ob_type != &PyCode_Type) {
            return n > 0 ? n : PT_STACK_CHANGED; /* a frame popped or reused under the reader */
        }
        frames[n] = (pt_gil_frame_t){ (uintptr_t)f.f_code, (uintptr_t)code.co_qualname, (uintptr_t)code.co_filename,
                                      code.co_firstlineno };
        at = (uintptr_t)f.previous;
    }
    return n;
}
