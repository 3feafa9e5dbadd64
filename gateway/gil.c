/*
 * The GIL moves of ponte's own threads. Workers take it only to run app code and drop it whenever they wait; the
 * loop thread takes it only in --threads 0 mode. Keeping these in one place is what lets them be measured.
 */
#include "gateway.h"

void
pt_gil_acquire(PyThreadState *ts)
{
    PyEval_RestoreThread(ts);
}

PyThreadState *
pt_gil_release(void)
{
    return PyEval_SaveThread();
}
