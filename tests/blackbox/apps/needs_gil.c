/*
 * An extension module that says nothing of the GIL (no Py_mod_gil slot, no PyUnstable_Module_SetGIL): importing it
 * into a free-threaded CPython turns the GIL back on, as an older C extension does. On a GIL build it changes
 * nothing. tests/blackbox/test_free_threaded.py imports it, and expects ponte to say so.
 */
#include <Python.h>

static struct PyModuleDef needs_gil_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "needs_gil",
    .m_doc = "a module that has not declared that it runs without the GIL",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit_needs_gil(void);

PyMODINIT_FUNC
PyInit_needs_gil(void)
{
    return PyModule_Create(&needs_gil_def);
}
