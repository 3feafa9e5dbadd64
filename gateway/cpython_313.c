/*
 * CPython 3.13, 3.14 and 3.15's internals, as cpython.h asks for them, compiled against the headers of the
 * interpreter built for (Include/internal/pycore_gil.h, pycore_interp.h, pycore_frame.h, pycore_debug_offsets.h).
 *
 * Since PEP 684 (3.12) the GIL belongs to an interpreter: PyInterpreterState.ceval.gil points at the one in use,
 * the main interpreter's own (_gil) unless it shares another's. The current thread state became a thread-local
 * that other threads cannot read, so the holder is the GIL's last_holder while it is locked. A thread state's
 * frames hang from tstate->current_frame; each names its code object in f_executable.
 *
 * What differs between the minors this file serves is the two lines under "The frame's code": in 3.14
 * f_executable became a _PyStackRef whose low bits tag how it is counted, and the interpreter's own frames
 * (entry and C-stack shims, which run none of the app's code) moved to owner >= FRAME_OWNED_BY_INTERPRETER.
 *
 * The walk reads a copy of the thread's data stack, taken one chunk at a time (_PyStackChunk: the frames of a thread
 * live there, a generator's in the generator), not frame by frame: a deep stack unwinding while it was read one
 * frame per read gave frames already popped, and 3.14 clears a popped frame's f_executable, so the walk ended half
 * way (measured: on a 150-deep recursion, about half the frames read were cleared ones). A frame outside the copy
 * (a generator's) is read on its own. Code objects are read once per run of frames that share one (recursion).
 *
 * These versions describe their own layout in _PyRuntime.debug_offsets (for debuggers: "xdebugpy", the version,
 * then the offset of every field a reader needs). check_layout compares the offsets compiled in here with the
 * running interpreter's, so a patch release that moved a field is refused with its name rather than misread.
 */
#define Py_BUILD_CORE 1
#include "cpython.h"

#include <dlfcn.h>
#include <limits.h>
#include <internal/pycore_frame.h>
#include <internal/pycore_interp.h>
#include <internal/pycore_moduleobject.h>
#include <internal/pycore_pystate.h>
#include <internal/pycore_runtime.h>
#include <stdio.h>
#include <string.h>

#if PY_VERSION_HEX < 0x030D0000 || PY_VERSION_HEX >= 0x03100000
#error "cpython_313.c is CPython 3.13 to 3.15's: gateway/meson.build picks the file for the version built for"
#endif

/* The frame's code. */
#if PY_VERSION_HEX >= 0x030E0000
#define FRAME_CODE(f) ((uintptr_t)(f).f_executable.bits & ~(uintptr_t)7)
#define FRAME_IS_SHIM(f) ((f).owner >= FRAME_OWNED_BY_INTERPRETER)
#else
#define FRAME_CODE(f) ((uintptr_t)(f).f_executable)
#define FRAME_IS_SHIM(f) ((f).owner == FRAME_OWNED_BY_CSTACK)
#endif

/* Compares the offsets compiled in here with the running interpreter's own: 0, or -1 naming the first that
 * differs. */
static int
check_layout(const _PyRuntimeState *rt, char *why, size_t cap)
{
    const _Py_DebugOffsets *d = &rt->debug_offsets;
    const struct {
        const char *name;
        uint64_t running, built;
    } fields[] = {
        { "interpreter_state.ceval_gil", d->interpreter_state.ceval_gil, offsetof(PyInterpreterState, ceval.gil) },
        { "interpreter_state.gil_runtime_state_locked", d->interpreter_state.gil_runtime_state_locked,
          offsetof(PyInterpreterState, _gil.locked) },
        { "interpreter_state.gil_runtime_state_holder", d->interpreter_state.gil_runtime_state_holder,
          offsetof(PyInterpreterState, _gil.last_holder) },
        { "thread_state.size", d->thread_state.size, sizeof(PyThreadState) },
        { "thread_state.current_frame", d->thread_state.current_frame, offsetof(PyThreadState, current_frame) },
        { "thread_state.native_thread_id", d->thread_state.native_thread_id,
          offsetof(PyThreadState, native_thread_id) },
        { "interpreter_frame.previous", d->interpreter_frame.previous, offsetof(_PyInterpreterFrame, previous) },
        { "interpreter_frame.executable", d->interpreter_frame.executable,
          offsetof(_PyInterpreterFrame, f_executable) },
        { "interpreter_frame.owner", d->interpreter_frame.owner, offsetof(_PyInterpreterFrame, owner) },
        { "code_object.qualname", d->code_object.qualname, offsetof(PyCodeObject, co_qualname) },
        { "code_object.filename", d->code_object.filename, offsetof(PyCodeObject, co_filename) },
        { "code_object.firstlineno", d->code_object.firstlineno, offsetof(PyCodeObject, co_firstlineno) },
    };
    size_t i;

    if (memcmp(d->cookie, _Py_Debug_Cookie, sizeof(d->cookie)) != 0
        || (d->version & 0xFFFF0000u) != ((uint64_t)PY_VERSION_HEX & 0xFFFF0000u)) {
        snprintf(why, cap, "the interpreter's debug offsets are not those of %d.%d", PY_MAJOR_VERSION,
                 PY_MINOR_VERSION);
        return -1;
    }
    for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (fields[i].running != fields[i].built) {
            snprintf(why, cap, "CPython %s moved %s (%llu, built for %llu): rebuild ponte against it", Py_GetVersion(),
                     fields[i].name, (unsigned long long)fields[i].running, (unsigned long long)fields[i].built);
            return -1;
        }
    }
    return 0;
}

int
pt_cpython_gil(pt_cpython_gil_t *gil, char *why, size_t cap)
{
    const _PyRuntimeState *rt = dlsym(RTLD_DEFAULT, "_PyRuntime");
    PyInterpreterState *interp = PyInterpreterState_Main();
    struct _gil_runtime_state *g;

    if (rt == NULL || interp == NULL) {
        snprintf(why, cap, "_PyRuntime not found");
        return -1;
    }
    if (check_layout(rt, why, cap) < 0) {
        return -1;
    }
    g = interp->ceval.gil;
    *gil = (pt_cpython_gil_t){ &g->cond, &g->switch_cond, &g->interval };
    return 0;
}

int
pt_cpython_threads(pt_gil_thread_state_t *out, int max)
{
    PyInterpreterState *interp = PyInterpreterState_Main();
    uintptr_t at = 0;
    int n = 0, steps;

    if (interp == NULL || pt_cpython_peek(&at, (uintptr_t)&interp->threads.head, sizeof(at)) < 0) {
        return 0;
    }
    /* steps bounds the walk, should a torn read make the list a loop */
    for (steps = 0; at != 0 && n < max && steps < 4 * max; steps++) {
        PyThreadState t;

        if (pt_cpython_peek(&t, at, sizeof(t)) < 0) {
            break;
        }
        out[n].at = at;
        out[n].tid = t.native_thread_id;
        out[n++].state = t.state == _Py_THREAD_ATTACHED ? PT_THREAD_ATTACHED
            : t.state == _Py_THREAD_SUSPENDED           ? PT_THREAD_SUSPENDED
                                                        : PT_THREAD_DETACHED;
        at = (uintptr_t)t.next;
    }
    return n;
}

bool
pt_cpython_gil_on(void)
{
#ifdef Py_GIL_DISABLED
    PyInterpreterState *interp = PyInterpreterState_Main();
    struct _gil_runtime_state *g = interp ? _Py_atomic_load_ptr_relaxed(&interp->ceval.gil) : NULL;

    /* enabled: 0 off, INT_MAX on for good, anything between a count of module initialisations that turned it on for
     * their own span (_PyEval_EnableGILTransient, Python/ceval_gil.c). */
    return g != NULL && _Py_atomic_load_int_relaxed(&g->enabled) == INT_MAX;
#else
    return true;
#endif
}

int
pt_cpython_gil_users(char *out, size_t cap)
{
    int n = 0;
#ifdef Py_GIL_DISABLED
    PyObject *modules = PyDict_Copy(PyImport_GetModuleDict()), *name, *m;
    Py_ssize_t pos = 0;
    size_t len = 0;

    /* A module made from a PyModuleDef is an extension's; md_gil is what its Py_mod_gil slot (or
     * PyUnstable_Module_SetGIL) said, Py_MOD_GIL_USED when it said nothing. Python modules have no def. */
    while (modules != NULL && PyDict_Next(modules, &pos, &name, &m)) {
        const char *u = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;

        if (PyModule_Check(m) && PyModule_GetDef(m) != NULL && ((PyModuleObject *)m)->md_gil == Py_MOD_GIL_USED
            && u != NULL && len < cap) {
            len += (size_t)snprintf(out + len, cap - len, "%s%s", n ? ", " : "", u);
            n++;
        }
    }
    Py_XDECREF(modules);
    PyErr_Clear();
#endif
    if (cap > 0 && n == 0) {
        out[0] = '\0';
    }
    return n;
}

uintptr_t
pt_cpython_holder(void)
{
    PyInterpreterState *interp = PyInterpreterState_Main();
    struct _gil_runtime_state *g = interp ? _Py_atomic_load_ptr_relaxed(&interp->ceval.gil) : NULL;

    if (g == NULL || !_Py_atomic_load_int_relaxed(&g->locked)) {
        return 0;
    }
    return (uintptr_t)_Py_atomic_load_ptr_relaxed(&g->last_holder);
}

/* The copy of the data stack the walk reads: the sampler's thread is the only caller, one sample at a time. */
#define STACK_COPY (1 << 20)
#define STACK_CHUNKS 16

static struct {
    char bytes[STACK_COPY];
    struct {
        uintptr_t start, end; /* the chunk in the thread */
        const char *copy;
    } chunk[STACK_CHUNKS];
    int n;
} stack;

/* Copies the part in use of each chunk, from the thread's newest (in use up to `top`, the thread's datastack_top)
 * back (in use up to the `top` it recorded when the next one was pushed), while they fit. */
static void
copy_stack(uintptr_t chunk, uintptr_t top)
{
    size_t used = 0, len;

    for (stack.n = 0; chunk != 0 && stack.n < STACK_CHUNKS; stack.n++) {
        _PyStackChunk head;

        if (pt_cpython_peek(&head, chunk, offsetof(_PyStackChunk, data)) < 0) {
            break;
        }
        if (stack.n > 0) {
            top = chunk + offsetof(_PyStackChunk, data) + head.top * sizeof(PyObject *);
        }
        len = top - chunk;
        if (top <= chunk || len > head.size || len > STACK_COPY - used
            || pt_cpython_peek(stack.bytes + used, chunk, len) < 0) {
            break;
        }
        stack.chunk[stack.n].start = chunk;
        stack.chunk[stack.n].end = top;
        stack.chunk[stack.n].copy = stack.bytes + used;
        used += len;
        chunk = (uintptr_t)head.previous;
    }
}

/* The frame at `at`: from the copy when it is there, else read. 0, or -1. */
static int
read_frame(_PyInterpreterFrame *f, uintptr_t at)
{
    const size_t len = offsetof(_PyInterpreterFrame, localsplus);
    int i;

    for (i = 0; i < stack.n; i++) {
        /* at comes from a torn read as often as not: at + len may wrap past zero, so no sum is compared */
        if (at >= stack.chunk[i].start && at < stack.chunk[i].end && stack.chunk[i].end - at >= len) {
            memcpy(f, stack.chunk[i].copy + (at - stack.chunk[i].start), len);
            return 0;
        }
    }
    return pt_cpython_peek(f, at, len);
}

int
pt_cpython_stack(uintptr_t holder, unsigned long *tid, pt_gil_frame_t *frames, int max)
{
    PyThreadState ts;
    PyCodeObject code;
    uintptr_t at, code_at = 0;
    int n = 0, steps;

    *tid = 0;
    if (pt_cpython_peek(&ts, holder, sizeof(ts)) < 0) {
        return PT_STACK_CHANGED; /* held, by a thread state that changed under the reader */
    }
    *tid = ts.native_thread_id;
    copy_stack((uintptr_t)ts.datastack_chunk, (uintptr_t)ts.datastack_top);
    /* steps bounds the walk over shims too, should a torn read make the chain a loop */
    for (at = (uintptr_t)ts.current_frame, steps = 0; at != 0 && n < max && steps < 2 * max; steps++) {
        _PyInterpreterFrame f;

        if (read_frame(&f, at) < 0) {
            return n > 0 ? n : PT_STACK_CHANGED;
        }
        at = (uintptr_t)f.previous;
        if (FRAME_IS_SHIM(f) || FRAME_CODE(f) == 0) {
            continue; /* the interpreter's own, or one being pushed or popped (its code not yet or no longer set) */
        }
        /* Up to the code's fields that name it: the bytecode that follows is not needed. */
        if (FRAME_CODE(f) != code_at
            && (pt_cpython_peek(&code, FRAME_CODE(f), offsetof(PyCodeObject, co_code_adaptive)) < 0
                || code.ob_base.ob_base.ob_type != &PyCode_Type)) {
            return n > 0 ? n : PT_STACK_CHANGED; /* a frame popped or reused under the reader */
        }
        code_at = FRAME_CODE(f);
        frames[n++] = (pt_gil_frame_t){ code_at, (uintptr_t)code.co_qualname, (uintptr_t)code.co_filename,
                                        code.co_firstlineno };
    }
    return n;
}
