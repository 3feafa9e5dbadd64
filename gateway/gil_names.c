/*
 * Threads the app starts, under their Python names: threading's bootstrap is wrapped so that a thread passes its
 * name to its GIL record (gil.c) as soon as it runs, before its Python code takes the GIL, and to the OS (top -H,
 * perf and gdb show it).
 */
#include "gateway.h"

#include <pthread.h>
#include <stdio.h>

static PyObject *
name_python_thread(PyObject *mod, PyObject *name)
{
    const char *s = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    char os_name[16];

    if (s == NULL) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    pt_gil_thread_name(s, "app");
    snprintf(os_name, sizeof(os_name), "%s", s);
    pthread_setname_np(pthread_self(), os_name);
    Py_RETURN_NONE;
}

static PyMethodDef name_def = { "name_thread", name_python_thread, METH_O, "name this thread in ponte's GIL view" };

int
pt_gil_name_python_threads(void)
{
    static const char src[] = "import threading\n"
                              "def _install(name_thread):\n"
                              "    inner = threading.Thread._bootstrap_inner\n"
                              "    def _bootstrap_inner(self):\n"
                              "        name_thread(self.name)\n"
                              "        inner(self)\n"
                              "    threading.Thread._bootstrap_inner = _bootstrap_inner\n";
    PyObject *ns = pt_py_exec(src), *fn = PyCFunction_New(&name_def, NULL), *r = NULL;

    if (ns != NULL && fn != NULL) {
        r = PyObject_CallFunctionObjArgs(PyDict_GetItemString(ns, "_install"), fn, NULL); /* borrowed */
    }
    Py_XDECREF(ns);
    Py_XDECREF(fn);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}
