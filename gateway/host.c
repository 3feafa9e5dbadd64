/*
 * --interpreter host: ponte runs inside Debian's /usr/bin/python3 rather than in the libpython it links.
 *
 * Debian builds /usr/bin/python3.11 with link-time optimisation; the libpython3.11.a and .so it ships for embedding
 * have none, and run pure Python about 9% slower (docs/benchmarks.md, "The interpreter"). Only that executable
 * has the optimised interpreter, so ponte goes to it: the ponte executable parses its arguments, then replaces
 * itself (same pid) with `python3 -P -c BOOT VERSION MODULE ARGV...`, where MODULE is ponte built as an extension
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
#include <sys/uio.h>
#include <unistd.h>

#include "../server/log.h"
#include "../server/main.h"
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

/* The module beside the executable (a build tree), else in the package pip installed with it (VENV/bin/ponte and
 * VENV/lib/python3.X/site-packages/ponte/, ~/.local likewise), else where meson installs it; the GIL library (""
 * if missing) beside it. */
static bool
find_module(char *module, char *gil, size_t cap)
{
    char here[PATH_MAX], pip[PATH_MAX + 64];
    size_t len = sizeof(here);
    char *slash;
    const char *dirs[3] = { NULL, NULL, PT_MODULE_DIR };
    int i;

    if (uv_exepath(here, &len) == 0 && (slash = strrchr(here, '/')) != NULL) {
        *slash = '\0';
        dirs[0] = here;
        snprintf(pip, sizeof(pip), "%s/../lib/python%d.%d/site-packages/ponte", here, PY_MAJOR_VERSION,
                 PY_MINOR_VERSION);
        dirs[1] = pip;
    }
    for (i = 0; i < 3; i++) {
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
    char module[PATH_MAX], gil[PATH_MAX], venv_python[PATH_MAX];
    const char *python;
    char **args;
    int i;

    if (pt_py_hosted || cfg->interpreter == PT_INTERP_EMBEDDED) {
        return 0;
    }
    if (pt_venv_python(cfg, venv_python, sizeof(venv_python)) < 0) {
        return -1;
    }
    python = venv_python[0] != '\0' ? venv_python : cfg->python_executable; /* a venv's python is the venv */
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
    args = calloc((size_t)argc + 7, sizeof(*args));
    if (args == NULL || set_preload(gil) < 0) {
        fprintf(stderr, "ponte: error: cannot start %s: out of memory\n", python);
        free(args);
        return -1;
    }
    args[0] = (char *)python;
    args[1] = (char *)"-P"; /* no script directory or cwd on sys.path: --app-dir says what goes there */
    args[2] = (char *)"-c";
    args[3] = (char *)host_boot_py;
    args[4] = (char *)(STR(PY_MAJOR_VERSION) "." STR(PY_MINOR_VERSION));
    args[5] = module;
    for (i = 0; i < argc; i++) {
        args[6 + i] = argv[i]; /* with ponte's own name, for the command line ps shows (show_command_line) */
    }
    fflush(NULL);
    execv(python, args);
    fprintf(stderr, "ponte: %s: cannot run %s: %s%s\n", cfg->interpreter == PT_INTERP_HOST ? "error" : "warning",
            python, strerror(errno),
            cfg->interpreter == PT_INTERP_HOST ? "" : "; serving with the embedded interpreter");
    free(args);
    unsetenv("LD_PRELOAD");
    if (getenv("PONTE_LD_PRELOAD_WAS") != NULL) {
        setenv("LD_PRELOAD", getenv("PONTE_LD_PRELOAD_WAS"), 1);
        unsetenv("PONTE_LD_PRELOAD_WAS");
    }
    return cfg->interpreter == PT_INTERP_HOST ? -1 : 0;
}

/*
 * ps, top and /proc/PID/cmdline show python3's command line: `/usr/bin/python3 -P -c <host_boot.py, some 1,500
 * bytes> 3.11 MODULE ARGS`. The kernel reads it from the process's argument area ([arg_start, arg_end) in
 * /proc/self/stat), so that area is rewritten in place with ponte's own (argv, NUL-separated, NUL-padded), as
 * servers that name their processes do; python3 copied those strings at start-up and reads them no more. Arguments
 * that do not fit (they always do: the boot script alone is longer) are left out.
 */
static void
show_command_line(int argc, char **argv)
{
    char stat[1024], *p, *area;
    unsigned long long start, end;
    size_t n, cap, len = 0;
    FILE *f = fopen("/proc/self/stat", "r");
    int i;

    if (f == NULL) {
        return;
    }
    n = fread(stat, 1, sizeof(stat) - 1, f);
    fclose(f);
    stat[n] = '\0';
    p = strrchr(stat, ')'); /* the name before it may hold spaces; fields count from the one after */
    for (i = 2; p != NULL && i < 48; i++) {
        p = strchr(p + 1, ' '); /* the space before field i + 1 */
    }
    if (p == NULL || sscanf(p + 1, "%llu %llu", &start, &end) != 2 || end <= start) {
        return; /* fields 48 and 49: arg_start and arg_end (Linux 3.5 and later) */
    }
    area = (char *)(uintptr_t)start;
    cap = (size_t)(end - start);
    char *was = malloc(cap), *shown = malloc(cap + 1);
    struct iovec local = { was, cap }, remote = { area, cap };

    /* Only where the area holds what the kernel shows as this process's command line: under valgrind, say, the
     * stat fields name the tool's own (read here without touching it, so a wrong address cannot fault). argv's
     * strings are the module's own copies, not in the area. */
    f = fopen("/proc/self/cmdline", "r");
    if (was != NULL && shown != NULL && f != NULL && fread(shown, 1, cap + 1, f) == cap
        && process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == (ssize_t)cap && memcmp(was, shown, cap) == 0) {
        for (i = 0; i < argc && len + (n = strlen(argv[i]) + 1) <= cap; i++) {
            memcpy(area + len, argv[i], n);
            len += n;
        }
        memset(area + len, 0, cap - len); /* the rest NUL, so the kernel keeps to the arguments */
    }
    if (f != NULL) {
        fclose(f);
    }
    free(was);
    free(shown);
}

/* _ponte_host.main(argv): the server, in this interpreter, with argv as its command line (argv[0] the name the
 * ponte executable was run by). Returns its exit status. */
static PyObject *
module_main(PyObject *self, PyObject *arg)
{
    PyObject *bytes = NULL, *item;
    char **argv = NULL;
    Py_ssize_t n, i;
    int r;

    if (!PyList_Check(arg) || PyList_GET_SIZE(arg) < 1) {
        PyErr_SetString(PyExc_TypeError, "main() takes the command line, as a list starting with the program name");
        return NULL;
    }
    n = PyList_GET_SIZE(arg);
    bytes = PyList_New(n);
    argv = calloc((size_t)n + 1, sizeof(*argv));
    if (bytes == NULL || argv == NULL) {
        goto fail;
    }
    for (i = 0; i < n; i++) {
        item = PyUnicode_EncodeFSDefault(PyList_GET_ITEM(arg, i));
        if (item == NULL) {
            goto fail;
        }
        PyList_SET_ITEM(bytes, i, item);
        argv[i] = PyBytes_AS_STRING(item);
    }
    pt_py_hosted = true;
    prctl(PR_SET_NAME, "ponte"); /* the name top and pgrep show; the threads started from here inherit it */
    show_command_line((int)n, argv);
    r = pt_main((int)n, argv);
    free(argv);
    Py_DECREF(bytes);
    return PyLong_FromLong(r);
fail:
    free(argv);
    Py_XDECREF(bytes);
    return PyErr_Occurred() ? NULL : PyErr_NoMemory();
}

static PyMethodDef module_methods[] = {
    { "main", module_main, METH_O, "main(argv) -> exit status: run ponte with this command line" },
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
    return pt_module_without_gil(PyModule_Create(&module_def));
}
