/*
 * --interpreter host: ponte runs inside Debian's /usr/bin/python3 rather than in the libpython it links.
 *
 * Debian builds /usr/bin/python3.11 with link-time optimisation; the libpython3.11.a and .so it ships for embedding
 * have none, and run pure Python about 9% slower (docs/benchmarks.md, "The interpreter"). Only that executable
 * has the optimised interpreter, so ponte goes to it: the ponte executable parses its arguments, then replaces
 * itself (same pid) with `python3 -P -c BOOT VERSION MODULE ARGS...`, where MODULE is ponte built as an extension
 * module (_ponte_host.cpython-3XX-ARCH.so, the same server and gateway code) and BOOT is host_boot.py, which
 * imports it and calls its main(): the same pt_main as the executable's, on the interpreter python3 has started.
 *
 * The GIL probe works by defining pthread_cond_signal/_wait/_timedwait where the interpreter's calls land first
 * (gil_cond.c). In the executable that is the executable; in python3 it is a library named in LD_PRELOAD, so that
 * file is also built alone, as libponte-gil.so beside the module, and preloaded. BOOT puts the user's LD_PRELOAD
 * back before the app starts, so that the app's subprocesses do not inherit ours (and if one did, it would only
 * pass its calls on).
 *
 * Under --processes the master stays the ponte executable (it runs no Python); each worker it starts is a ponte
 * that replaces itself the same way.
 */
#include "gateway.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../server/log.h"
#include "host_boot.h"

bool pt_py_hosted;

#define STR_(x) #x
#define STR(x) STR_(x)

static bool
is_file(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* dir/name into out if that file exists. */
static bool
found(char *out, size_t cap, const char *dir, const char *name)
{
    return (size_t)snprintf(out, cap, "%s/%s", dir, name) < cap && is_file(out);
}

/* The module beside the executable (a build tree), else where meson installs it; the GIL library ("" if missing)
 * beside it. */
static bool
find_module(char *module, char *gil, size_t cap)
{
    char here[PATH_MAX];
    size_t len = sizeof(here);
    char *slash;
    const char *dirs[2] = { NULL, PT_MODULE_DIR };
    int i;

    if (uv_exepath(here, &len) == 0 && (slash = strrchr(here, '/')) != NULL) {
        *slash = '\0';
        dirs[0] = here;
    }
    for (i = 0; i < 2; i++) {
        if (dirs[i] != NULL && found(module, cap, dirs[i], PT_MODULE_FILE)) {
            if (!found(gil, cap, dirs[i], PT_GIL_LIB_FILE)) {
                gil[0] = '\0';
            }
            return true;
        }
    }
    return false;
}

/* LD_PRELOAD=LIB, before the user's own; the user's value is kept for BOOT to restore. */
static int
set_preload(const char *lib)
{
    const char *was = getenv("LD_PRELOAD");
    char *v;
    int r;

    if (lib[0] == '\0' || strpbrk(lib, ": ") != NULL) {
        return 0; /* missing, or LD_PRELOAD cannot name it: the GIL probe then says it is not exact */
    }
    if (was == NULL || was[0] == '\0') {
        return setenv("LD_PRELOAD", lib, 1);
    }
    if (setenv("PONTE_LD_PRELOAD_WAS", was, 1) < 0 || asprintf(&v, "%s:%s", lib, was) < 0) {
        return -1;
    }
    r = setenv("LD_PRELOAD", v, 1);
    free(v);
    return r;
}

int
pt_app_exec_host(const pt_config_t *cfg, int argc, char **argv)
{
    char module[PATH_MAX], gil[PATH_MAX];
    char **args;
    int i;

    if (pt_py_hosted || cfg->interpreter == PT_INTERP_EMBEDDED) {
        return 0;
    }
    if (!find_module(module, gil, sizeof(module))) {
        if (cfg->interpreter == PT_INTERP_HOST) {
            fprintf(stderr,
                    "ponte: error: --interpreter host: no %s beside ponte or in %s (this build has none: "
                    "a sanitizer or fuzz build embeds only)\n",
                    PT_MODULE_FILE, PT_MODULE_DIR);
            return -1;
        }
        return 0;
    }
    args = calloc((size_t)argc + 6, sizeof(*args));
    if (args == NULL || set_preload(gil) < 0) {
        fprintf(stderr, "ponte: error: cannot start %s: out of memory\n", cfg->python_executable);
        free(args);
        return -1;
    }
    args[0] = (char *)cfg->python_executable;
    args[1] = (char *)"-P"; /* no script directory or cwd on sys.path: --app-dir says what goes there */
    args[2] = (char *)"-c";
    args[3] = (char *)host_boot_py;
    args[4] = (char *)(STR(PY_MAJOR_VERSION) "." STR(PY_MINOR_VERSION));
    args[5] = module;
    for (i = 1; i < argc; i++) {
        args[5 + i] = argv[i];
    }
    fflush(NULL);
    execv(cfg->python_executable, args);
    fprintf(stderr, "ponte: %s: cannot run %s: %s%s\n", cfg->interpreter == PT_INTERP_HOST ? "error" : "warning",
            cfg->python_executable, strerror(errno),
            cfg->interpreter == PT_INTERP_HOST ? "" : "; serving with the embedded interpreter");
    free(args);
    unsetenv("LD_PRELOAD");
    if (getenv("PONTE_LD_PRELOAD_WAS") != NULL) {
        setenv("LD_PRELOAD", getenv("PONTE_LD_PRELOAD_WAS"), 1);
        unsetenv("PONTE_LD_PRELOAD_WAS");
    }
    return cfg->interpreter == PT_INTERP_HOST ? -1 : 0;
}

/* _ponte_host.main(args): the server, in this interpreter, with args as its command line. Returns its exit status. */
static PyObject *
module_main(PyObject *self, PyObject *arg)
{
    PyObject *bytes = NULL, *item;
    char **argv = NULL;
    Py_ssize_t n, i;
    int r;

    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "main() takes the list of arguments");
        return NULL;
    }
    n = PyList_GET_SIZE(arg);
    bytes = PyList_New(n);
    argv = calloc((size_t)n + 2, sizeof(*argv));
    if (bytes == NULL || argv == NULL) {
        goto fail;
    }
    argv[0] = (char *)"ponte";
    for (i = 0; i < n; i++) {
        item = PyUnicode_EncodeFSDefault(PyList_GET_ITEM(arg, i));
        if (item == NULL) {
            goto fail;
        }
        PyList_SET_ITEM(bytes, i, item);
        argv[i + 1] = PyBytes_AS_STRING(item);
    }
    pt_py_hosted = true;
    prctl(PR_SET_NAME, "ponte"); /* the name ps, top and pgrep show; the threads started from here inherit it */
    r = pt_main((int)n + 1, argv);
    free(argv);
    Py_DECREF(bytes);
    return PyLong_FromLong(r);
fail:
    free(argv);
    Py_XDECREF(bytes);
    return PyErr_Occurred() ? NULL : PyErr_NoMemory();
}

static PyMethodDef module_methods[] = {
    { "main", module_main, METH_O, "main(args) -> exit status: run ponte with this command line (no program name)" },
    { NULL, NULL, 0, NULL },
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_ponte_host",
    .m_doc = "ponte's server, loaded into python3 by the ponte executable",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__ponte_host(void);

PyMODINIT_FUNC
PyInit__ponte_host(void)
{
    return PyModule_Create(&module_def);
}
