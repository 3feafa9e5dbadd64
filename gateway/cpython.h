/*
 * What ponte reads of one CPython minor version's internals, behind one narrow interface: where the GIL is, who
 * holds it, and the holder's Python stack. One file implements it per shape of those internals, compiled against
 * that interpreter's own internal headers (Py_BUILD_CORE); meson picks it by the version it builds for:
 *
 *   3.11             cpython_311.c   the GIL in _PyRuntime.ceval, the holder in gilstate.tstate_current, _PyCFrame
 *   3.13, 3.14, 3.15 cpython_313.c   the GIL per interpreter (PEP 684), last_holder, current_frame; its two
 *                                    version lines: 3.14's f_executable is a tagged _PyStackRef, and the frames
 *                                    the interpreter owns are numbered anew
 *
 * From 3.13 the interpreter describes its own layout (_Py_DebugOffsets, cpython_debug_offsets.h): the files check
 * what they were compiled with against it, so a patch release that moved a field is refused rather than misread.
 * A new minor version is one new file (or a row above, when its shapes are an older one's) and a line in
 * gateway/meson.build. gil_probe.c is the caller, and gil_state.c for whether there is a GIL at all.
 */
#ifndef PT_CPYTHON_H
#define PT_CPYTHON_H

#include "gateway.h" /* Python.h first: its pyconfig.h sets the feature macros the C library reads */

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* The main interpreter's GIL: its two condition variables (gil_probe.c says what each signal means) and its
 * switch interval in µs, which take_gil reads on every wait. */
typedef struct {
    pthread_cond_t *cond, *switch_cond;
    unsigned long *interval;
} pt_cpython_gil_t;

/* Finds the running main interpreter's GIL: 0, or -1 with why not (the running interpreter's own description of
 * its layout disagrees with the one compiled in). */
int pt_cpython_gil(pt_cpython_gil_t *gil, char *why, size_t cap);
/* The thread state that holds the GIL now (an address, to read with pt_cpython_peek), 0 if none. Any thread, no
 * GIL. */
uintptr_t pt_cpython_holder(void);
/* The Python stack of the thread state at ts, innermost frame first, up to max frames; *tid its native thread id
 * (0 if its state could not be read). The number of frames read (0: the thread runs no Python), or
 * PT_STACK_CHANGED when its state or its innermost frame changed under the reader and no frame could be read. Any
 * thread, no GIL: everything is read with pt_cpython_peek. */
int pt_cpython_stack(uintptr_t ts, unsigned long *tid, pt_gil_frame_t *frames, int max);

/* The main interpreter's thread states, up to max (gateway.h's pt_gil_thread_state_t): how many. Any thread, no GIL:
 * the list is read with pt_cpython_peek, so a thread state freed under the reader ends the walk early. 3.13 and
 * later (3.11's threads have no attached state: the GIL's holder is the one running Python). */
int pt_cpython_threads(pt_gil_thread_state_t *out, int max);

/* Whether the main interpreter's GIL is on for good: always on a GIL build; on a free-threaded one (3.14t) when
 * PYTHON_GIL=1 asked for it or a module that needs it was imported, not while a module's initialisation turns it on
 * for that moment only. Any thread, no GIL. */
bool pt_cpython_gil_on(void);
/* The extension modules in sys.modules that need the GIL (their Py_mod_gil is not Py_MOD_GIL_NOT_USED), their
 * names comma-separated into out; how many. Free-threaded builds only (0 otherwise). The caller is attached. */
int pt_cpython_gil_users(char *out, size_t cap);

/* Copies len bytes at addr (this process; perhaps freed since) into dst: 0, or -1 if any byte was not readable.
 * gil_probe.c. */
int pt_cpython_peek(void *dst, uintptr_t addr, size_t len);

#endif
