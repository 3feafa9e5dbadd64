/*
 * The WSGI environ of a request (PEP 3333), built from a template dict shared by every request plus the request's
 * own keys, which are interned strings (str.c).
 *
 * Each thread that builds environs keeps its own copy of the template and its own strings of recent listeners and
 * clients, so that threads running Python at once (free-threaded CPython) change nothing shared here, and do not
 * all lock the one template dict to copy it.
 */
#include "gateway.h"

#include <stdlib.h>
#include <strings.h>

#include "../server/log.h"

static _Thread_local struct {
    PyObject *template;        /* this thread's copy of pt_environ_t's */
    PyObject *server_names[8]; /* SERVER_NAME / SERVER_PORT per listener, by name pointer */
    const char *server_name_keys[8];
    int server_ports[8];
    PyObject *server_port_strs[8];
    char last_remote[64]; /* REMOTE_ADDR of the previous request, usually the same few clients */
    PyObject *last_remote_str;
} mine;

/* PATH_INFO: percent-decoded bytes as latin-1 (PEP 3333). New ref. */
static PyObject *
decode_path(pt_span_t path)
{
    char stack[512];
    char *buf = stack;
    size_t n;
    PyObject *s;

    if (memchr(path.base, '%', path.len) == NULL) {
        return PyUnicode_DecodeLatin1(path.base, (Py_ssize_t)path.len, NULL);
    }
    if (path.len > sizeof(stack)) {
        buf = PyMem_Malloc(path.len);
        if (buf == NULL) {
            return PyErr_NoMemory();
        }
    }
    n = pt_percent_decode(path.base, path.len, buf);
    s = PyUnicode_DecodeLatin1(buf, (Py_ssize_t)n, NULL);
    if (buf != stack) {
        PyMem_Free(buf);
    }
    return s;
}

/* PATH_INFO: the decoded path, less --root-path (which is SCRIPT_NAME) when it starts with it. New ref. */
static PyObject *
path_info(pt_environ_t *e, const pt_request_t *req)
{
    size_t rlen = strlen(e->cfg->root_path);
    pt_span_t p = req->path;

    if (p.len == 1 && p.base[0] == '*') {
        return Py_NewRef(pt_str.empty);
    }
    if (rlen > 0 && p.len >= rlen && memcmp(p.base, e->cfg->root_path, rlen) == 0
        && (p.len == rlen || p.base[rlen] == '/')) {
        p.base += rlen;
        p.len -= rlen;
    }
    return decode_path(p);
}

static int
set_new(PyObject *d, PyObject *key, PyObject *value)
{
    int r;

    if (value == NULL) {
        return -1;
    }
    r = PyDict_SetItem(d, key, value);
    Py_DECREF(value);
    return r;
}

/* SERVER_NAME and SERVER_PORT, built once per listener. Borrowed references. */
static int
server_strings(const pt_request_t *req, PyObject **name, PyObject **port)
{
    int i;

    for (i = 0; i < 8 && mine.server_name_keys[i] != NULL; i++) {
        if (mine.server_name_keys[i] == req->server_name && mine.server_ports[i] == req->server_port) {
            *name = mine.server_names[i];
            *port = mine.server_port_strs[i];
            return 0;
        }
    }
    if (i == 8) {
        i = 7;
        Py_CLEAR(mine.server_names[i]);
        Py_CLEAR(mine.server_port_strs[i]);
    }
    mine.server_names[i] = PyUnicode_DecodeLatin1(req->server_name, (Py_ssize_t)strlen(req->server_name), NULL);
    mine.server_port_strs[i] = PyUnicode_FromFormat("%d", req->server_port);
    if (mine.server_names[i] == NULL || mine.server_port_strs[i] == NULL) {
        Py_CLEAR(mine.server_names[i]);
        Py_CLEAR(mine.server_port_strs[i]);
        return -1;
    }
    mine.server_name_keys[i] = req->server_name;
    mine.server_ports[i] = req->server_port;
    *name = mine.server_names[i];
    *port = mine.server_port_strs[i];
    return 0;
}

static int
add_header(PyObject *env, const pt_header_t *h)
{
    PyObject *key, *value, *old;
    int r;

    if (memchr(h->name.base, '_', h->name.len) != NULL) {
        /* "X_Foo" and "X-Foo" would both become HTTP_X_FOO: a proxy may have vetted one and passed the other. */
        pt_log_debug("dropping header with an underscore: %.*s", (int)h->name.len, h->name.base);
        return 0;
    }
    key = pt_str_header_key(h->name);
    if (key == NULL) {
        return -1;
    }
    value = PyUnicode_DecodeLatin1(h->value.base, (Py_ssize_t)h->value.len, NULL);
    if (value == NULL) {
        Py_DECREF(key);
        return -1;
    }
    old = PyDict_GetItemWithError(env, key); /* borrowed: no other thread sees env before the app has it */
    if (old != NULL) {
        /* Repeated header lines join with ", " (RFC 9110 5.3). */
        PyObject *joined = PyUnicode_FromFormat("%U, %U", old, value);

        Py_SETREF(value, joined);
    } else if (PyErr_Occurred()) {
        Py_CLEAR(value);
    }
    r = value ? PyDict_SetItem(env, key, value) : -1;
    Py_DECREF(key);
    Py_XDECREF(value);
    return r;
}

/* REMOTE_ADDR as a str, reusing the previous one when the client address repeats. New ref. */
static PyObject *
remote_addr(const char *addr)
{
    if (mine.last_remote_str == NULL || strcmp(mine.last_remote, addr) != 0) {
        PyObject *s = PyUnicode_FromString(addr);

        if (s == NULL) {
            return NULL;
        }
        Py_XSETREF(mine.last_remote_str, s);
        snprintf(mine.last_remote, sizeof(mine.last_remote), "%s", addr);
    }
    return Py_NewRef(mine.last_remote_str);
}

/*
 * An absolute-form target names the server the request is for (RFC 9112 3.2.2): SERVER_NAME and SERVER_PORT come
 * from its authority, as HTTP_HOST does, so that an URL rebuilt from the environ (PEP 3333) is the target's.
 */
static int
authority_server(PyObject *env, const pt_request_t *req)
{
    pt_span_t a = req->authority;
    const char *colon = NULL, *p;
    bool https = req->target.len >= 6 && strncasecmp(req->target.base, "https:", 6) == 0;
    PyObject *name, *port;
    int r;

    for (p = a.base + a.len; p > a.base; p--) {
        if (p[-1] == ']') {
            break; /* an IPv6 literal: its colons are not the port's */
        }
        if (p[-1] == ':') {
            colon = p - 1;
            break;
        }
    }
    name = PyUnicode_DecodeLatin1(a.base, colon ? colon - a.base : (Py_ssize_t)a.len, NULL);
    port = colon && colon + 1 < a.base + a.len ? PyUnicode_DecodeLatin1(colon + 1, a.base + a.len - colon - 1, NULL)
                                               : PyUnicode_FromString(https ? "443" : "80");
    r = -1;
    if (name != NULL && port != NULL && PyDict_SetItem(env, pt_str.SERVER_NAME, name) == 0
        && PyDict_SetItem(env, pt_str.SERVER_PORT, port) == 0) {
        r = 0;
    }
    Py_XDECREF(name);
    Py_XDECREF(port);
    return r;
}

PyObject *
pt_environ_new(pt_environ_t *e, const pt_request_t *req, PyObject *input)
{
    PyObject *env, *name, *port;
    size_t i;

    if (mine.template == NULL && (mine.template = PyDict_Copy(e->template)) == NULL) {
        return NULL;
    }
    env = PyDict_Copy(mine.template);
    if (env == NULL) {
        return NULL;
    }
    if (set_new(env, pt_str.REQUEST_METHOD, pt_str_method(req->method)) < 0
        || set_new(env, pt_str.PATH_INFO, path_info(e, req)) < 0
        || set_new(env, pt_str.QUERY_STRING,
                   req->query.len ? PyUnicode_DecodeLatin1(req->query.base, (Py_ssize_t)req->query.len, NULL)
                                  : Py_NewRef(pt_str.empty))
            < 0
        || PyDict_SetItem(env, pt_str.SERVER_PROTOCOL,
                          req->h2 != NULL       ? pt_str.HTTP_2
                              : req->http_minor ? pt_str.HTTP_1_1
                                                : pt_str.HTTP_1_0)
            < 0
        || set_new(env, pt_str.REMOTE_ADDR, remote_addr(req->remote_addr)) < 0
        || set_new(env, pt_str.REMOTE_PORT, PyUnicode_FromFormat("%d", req->remote_port)) < 0
        || PyDict_SetItem(env, pt_str.wsgi_input, input) < 0 || server_strings(req, &name, &port) < 0
        || PyDict_SetItem(env, pt_str.SERVER_NAME, name) < 0 || PyDict_SetItem(env, pt_str.SERVER_PORT, port) < 0
        || (req->url_scheme[4] == 's' /* "https": TLS, or a trusted proxy's word */
            && (PyDict_SetItem(env, pt_str.wsgi_url_scheme, pt_str.https) < 0
                || PyDict_SetItem(env, pt_str.HTTPS, pt_str.on) < 0))) {
        Py_DECREF(env);
        return NULL;
    }
    if (req->authority.len > 0 && authority_server(env, req) < 0) {
        Py_DECREF(env);
        return NULL;
    }
    for (i = 0; i < req->nheaders; i++) {
        if (add_header(env, &req->headers[i]) < 0) {
            Py_DECREF(env);
            return NULL;
        }
    }
    return env;
}

/* d[key] = value, stealing value (NULL: an exception is set). */
static int
set_string_new(PyObject *d, const char *key, PyObject *value)
{
    int r = value ? PyDict_SetItemString(d, key, value) : -1;

    Py_XDECREF(value);
    return r;
}

/* What every request's environ shares, copied per request (PyDict_Copy of a small dict is one allocation). */
static PyObject *
template_new(const pt_config_t *cfg)
{
    PyObject *d = PyDict_New();
    PyObject *errors = PySys_GetObject("stderr"); /* borrowed */

    if (d == NULL) {
        return NULL;
    }
    if (errors == NULL) {
        errors = Py_None;
    }
    if (set_new(d, pt_str.SCRIPT_NAME, PyUnicode_DecodeLatin1(cfg->root_path, (Py_ssize_t)strlen(cfg->root_path), NULL))
            < 0
        || set_string_new(d, "SERVER_SOFTWARE", PyUnicode_FromString("ponte/" PT_VERSION)) < 0
        || set_string_new(d, "wsgi.version", Py_BuildValue("(ii)", 1, 0)) < 0
        || set_string_new(d, "wsgi.url_scheme", PyUnicode_InternFromString("http")) < 0
        || PyDict_SetItemString(d, "wsgi.errors", errors) < 0
        || PyDict_SetItemString(d, "wsgi.multithread", cfg->threads > 0 ? Py_True : Py_False) < 0
        || PyDict_SetItemString(d, "wsgi.multiprocess", cfg->worker_slot ? Py_True : Py_False) < 0
        || PyDict_SetItemString(d, "wsgi.run_once", Py_False) < 0
        || PyDict_SetItemString(d, "wsgi.input_terminated", Py_True) < 0
        || PyDict_SetItemString(d, "wsgi.file_wrapper", (PyObject *)&pt_file_wrapper_type) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

int
pt_environ_init(pt_environ_t *e, const pt_config_t *cfg)
{
    e->cfg = cfg;
    e->template = template_new(cfg);
    return e->template != NULL ? 0 : -1;
}
