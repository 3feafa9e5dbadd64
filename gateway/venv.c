/*
 * The virtual environment ponte serves an app from.
 *
 * Python finds a venv from its own executable: a pyvenv.cfg one folder above it makes sys.prefix that folder, its
 * site-packages importable and sys.executable that path (PEP 405). So ponte serves from a venv by starting Python
 * as the venv's bin/python: the python3 it runs inside is that one (host.c execs it, as `VENV/bin/python -m
 * anything` would run), and the embedded interpreter is told that it is (py.c sets PyConfig.executable). Then
 * sys.prefix, sys.executable, subprocess and multiprocessing are the venv's, as under gunicorn or uvicorn
 * installed in it, and so are --processes workers and --reload, which start ponte again with the same options
 * and environment.
 *
 * Which venv, as uWSGI's --virtualenv and the habits of gunicorn's users suggest: --virtualenv DIR; else the venv
 * whose bin/ holds ponte itself (`pip install ponte` put it there: like gunicorn installed in a venv, whose script
 * runs that venv's python whichever is active); else $VIRTUAL_ENV (a venv is active, and ponte is the system's);
 * else none.
 *
 * A venv holds packages built for one CPython (its pyvenv.cfg says which: `version` from venv, `version_info`
 * from virtualenv and uv). One of another minor version than ponte's is refused here, naming both and the fix,
 * rather than failing later deep inside an import.
 */
#include "gateway.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The venv ponte itself is installed in (VENV/bin/ponte beside VENV/pyvenv.cfg), into out: true if there is one. */
static bool
installed_in(char *out, size_t cap)
{
    char exe[PATH_MAX], cfg[PATH_MAX + 16];
    size_t len = sizeof(exe);
    char *slash;

    if (uv_exepath(exe, &len) != 0 || (slash = strrchr(exe, '/')) == NULL) {
        return false;
    }
    *slash = '\0'; /* VENV/bin */
    if ((slash = strrchr(exe, '/')) == NULL || strcmp(slash, "/bin") != 0) {
        return false;
    }
    *slash = '\0';
    snprintf(cfg, sizeof(cfg), "%s/pyvenv.cfg", exe);
    return access(cfg, R_OK) == 0 && (size_t)snprintf(out, cap, "%s", exe) < cap;
}

/* The X.Y.Z version in DIR/pyvenv.cfg's `version` or `version_info` line, into out: 0, or -errno. */
static int
venv_version(const char *dir, char *out, size_t cap)
{
    char path[PATH_MAX + 16], line[512];
    FILE *f;
    int r = -ENOENT;

    snprintf(path, sizeof(path), "%s/pyvenv.cfg", dir);
    if ((f = fopen(path, "r")) == NULL) {
        return -errno;
    }
    out[0] = '\0';
    while (fgets(line, sizeof(line), f) != NULL) {
        char *key = line + strspn(line, " \t"), *eq = strchr(key, '='), *val, *end;
        size_t klen;

        if (eq == NULL) {
            continue;
        }
        for (klen = (size_t)(eq - key); klen > 0 && (key[klen - 1] == ' ' || key[klen - 1] == '\t'); klen--) {
        }
        val = eq + 1 + strspn(eq + 1, " \t");
        end = val + strcspn(val, " \t\r\n");
        *end = '\0';
        if ((klen == 7 && strncmp(key, "version", 7) == 0) || (klen == 12 && strncmp(key, "version_info", 12) == 0)) {
            snprintf(out, cap, "%s", val);
            r = 0;
        }
    }
    fclose(f);
    return r;
}

int
pt_venv_python(const pt_config_t *cfg, char *python, size_t cap)
{
    char dir[PATH_MAX], version[64];
    const char *from = "--virtualenv", *env = getenv("VIRTUAL_ENV");
    unsigned major = 0, minor = 0;
    int r;

    python[0] = '\0';
    if (cfg->virtualenv != NULL) {
        snprintf(dir, sizeof(dir), "%s", cfg->virtualenv);
    } else if (installed_in(dir, sizeof(dir))) {
        from = "the venv ponte is installed in,";
    } else if (env != NULL && env[0] != '\0') {
        snprintf(dir, sizeof(dir), "%s", env);
        from = "VIRTUAL_ENV";
    } else {
        return 0;
    }
    if ((r = venv_version(dir, version, sizeof(version))) < 0) {
        fprintf(stderr, "ponte: error: %s %s: %s\n", from, dir,
                r == -ENOENT ? "not a virtual environment (no pyvenv.cfg with a version in it)" : strerror(-r));
        return -1;
    }
    if (sscanf(version, "%u.%u", &major, &minor) != 2 || major != PY_MAJOR_VERSION || minor != PY_MINOR_VERSION) {
        fprintf(stderr,
                "ponte: error: %s %s is a virtual environment of CPython %s, and this ponte is built for CPython "
                "%d.%d, whose packages only it can import. Make the venv with %d.%d (%s -m venv %s), or install "
                "ponte into this one (%s/bin/pip install ponte), which builds it for %u.%u.\n",
                from, dir, version, PY_MAJOR_VERSION, PY_MINOR_VERSION, PY_MAJOR_VERSION, PY_MINOR_VERSION,
                PT_PYTHON_EXECUTABLE, dir, dir, major, minor);
        return -1;
    }
    if ((size_t)snprintf(python, cap, "%s/bin/python", dir) >= cap || access(python, X_OK) != 0) {
        fprintf(stderr, "ponte: error: %s %s: no %s/bin/python to run\n", from, dir, dir);
        python[0] = '\0';
        return -1;
    }
    return 0;
}
