/*
 * ASGI connection scopes (spec 2.4): built per request from the request's spans, with interned keys (str.c).
 */
#include "asgi.h"

#include <string.h>

#include "../server/tls.h"

static PyObject *scope_asgi;      /* {"version": "3.0", "spec_version": "2.4"} */
static PyObject *root_path_value; /* --root-path as a str */
static PyObject *ws_extensions;   /* {"websocket.http.response": {}}: the app may deny with a response of its own */
/* An HTTP scope's keys in their order, the constant values set and the others None: a request's scope is a copy
 * (one allocation, the keys cloned) with its own values set in place, about half the instructions of inserting
 * twelve keys into a new dict. */
static PyObject *http_template;

int
pt_asgi_scope_init(const pt_config_t *cfg)
{
    scope_asgi = Py_BuildValue("{s:s,s:s}", "version", "3.0", "spec_version", "2.4");
    root_path_value = PyUnicode_FromString(cfg->root_path);
    ws_extensions = Py_BuildValue("{s:{}}", "websocket.http.response");
    if (scope_asgi == NULL || root_path_value == NULL || ws_extensions == NULL) {
        return -1;
    }
    struct {
        PyObject *key, *value;
    } items[] = {
        { pt_str.type, pt_str.http }, { pt_str.asgi, scope_asgi },      { pt_str.http_version, Py_None },
        { pt_str.method, Py_None },   { pt_str.scheme, Py_None },       { pt_str.path, Py_None },
        { pt_str.raw_path, Py_None }, { pt_str.query_string, Py_None }, { pt_str.root_path, root_path_value },
        { pt_str.headers, Py_None },  { pt_str.client, Py_None },       { pt_str.server, Py_None },
    };

    http_template = PyDict_New();
    for (size_t i = 0; http_template != NULL && i < sizeof(items) / sizeof(items[0]); i++) {
        if (PyDict_SetItem(http_template, items[i].key, items[i].value) < 0) {
            Py_CLEAR(http_template);
        }
    }
    return http_template != NULL ? 0 : -1;
}

/* scope["path"]: percent-decoded, as UTF-8. New ref. */
static PyObject *
decode_path(pt_span_t path)
{
    char *buf = PyMem_Malloc(path.len + 1);
    PyObject *s;

    if (buf == NULL) {
        return PyErr_NoMemory();
    }
    s = PyUnicode_DecodeUTF8(buf, (Py_ssize_t)pt_percent_decode(path.base, path.len, buf), "replace");
    PyMem_Free(buf);
    return s;
}

static PyObject *
build_headers(const pt_request_t *req)
{
    PyObject *list = PyList_New((Py_ssize_t)req->nheaders);
    size_t i;

    if (list == NULL) {
        return NULL;
    }
    for (i = 0; i < req->nheaders; i++) {
        const pt_header_t *h = &req->headers[i];
        PyObject *name = pt_str_header_name_lower(h->name);
        PyObject *value = name ? PyBytes_FromStringAndSize(h->value.base, (Py_ssize_t)h->value.len) : NULL;
        PyObject *pair = value ? PyTuple_Pack(2, name, value) : NULL;

        Py_XDECREF(name);
        Py_XDECREF(value);
        if (pair == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, pair); /* steals */
    }
    return list;
}

/* scope[key] = value, stealing value. */
static int
scope_set(PyObject *scope, PyObject *key, PyObject *value)
{
    int r = value ? PyDict_SetItem(scope, key, value) : -1;

    Py_XDECREF(value);
    return r;
}

/* (host, port), host None when NULL. New ref. Py_BuildValue("(si)") costs twice as much per request. */
static PyObject *
addr_tuple(const char *host, int port)
{
    PyObject *h = host ? PyUnicode_FromString(host) : Py_NewRef(Py_None), *p = h ? PyLong_FromLong(port) : NULL;
    PyObject *t = p ? PyTuple_New(2) : NULL;

    if (t == NULL) {
        Py_XDECREF(h);
        Py_XDECREF(p);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, h);
    PyTuple_SET_ITEM(t, 1, p);
    return t;
}

/* (host, port) from the tuple kept in *kept when its host and port are these, else a new one, kept in its place
 * (tuples are immutable: every scope may share one). A host of cap bytes or more is not kept. New ref. */
static PyObject *
kept_addr_tuple(PyObject **kept, int *kept_port, char *kept_host, size_t cap, const char *host, int port)
{
    size_t n = host ? strlen(host) : cap;
    PyObject *t;

    if (n >= cap) {
        return addr_tuple(host, port); /* a unix socket's client (no address), or a name too long to keep */
    }
    if (*kept == NULL || *kept_port != port || memcmp(kept_host, host, n + 1) != 0) {
        if ((t = addr_tuple(host, port)) == NULL) {
            return NULL;
        }
        Py_XSETREF(*kept, t);
        *kept_port = port;
        memcpy(kept_host, host, n + 1);
    }
    return Py_NewRef(*kept);
}

/* The client's (host, port), kept by port number: a connection's later requests, and a new connection from the
 * same address and port, share the tuple (equal by construction) instead of making a str, an int and a tuple for
 * each request. 256 slots, one per value of the port's low byte; a slot whose address or port differs is
 * replaced. New ref. */
typedef struct {
    PyObject *tuple;
    int port;
    char host[48]; /* an IPv6 address is at most 45 characters */
} client_slot_t;

/* Each loop thread's (--loops), made at its first request, on the heap (see asgi_loop.c's bridge); and the server's
 * (host, port), the same for every request on a listener, so the last one is kept. */
typedef struct {
    client_slot_t clients[256];
    PyObject *server;
    char server_name[256];
    int server_port;
    PyObject *server_cert;      /* the TLS certificate's PEM as a str, for ... */
    const char *server_cert_of; /* ... this string of the TLS context's */
} kept_t;
static _Thread_local kept_t *kept;

static kept_t *
kept_here(void)
{
    if (kept == NULL && (kept = calloc(1, sizeof(*kept))) != NULL) {
        kept->server_port = -1;
    }
    return kept;
}

static PyObject *
client_tuple(const char *host, int port)
{
    kept_t *k = kept_here();
    client_slot_t *slot = k != NULL ? &k->clients[port & 0xFF] : NULL;

    return slot != NULL ? kept_addr_tuple(&slot->tuple, &slot->port, slot->host, sizeof(slot->host), host, port)
                        : addr_tuple(host, port);
}

/* New ref. */
static PyObject *
server_tuple(const pt_request_t *req)
{
    kept_t *k = kept_here();

    return k != NULL ? kept_addr_tuple(&k->server, &k->server_port, k->server_name, sizeof(k->server_name),
                                       req->server_name, req->server_port)
                     : addr_tuple(req->server_name, req->server_port);
}

/* A str from UTF-8 bytes, or None for an empty string. New ref. */
static PyObject *
str_or_none(const char *s, size_t len)
{
    return len > 0 ? PyUnicode_DecodeUTF8(s, (Py_ssize_t)len, "replace") : Py_NewRef(Py_None);
}

/* The client's certificate chain, one PEM block each (leaf first). New ref. */
static PyObject *
pem_list(const pt_buf_t *pem)
{
    static const char end[] = "-----END CERTIFICATE-----\n";
    PyObject *list = PyList_New(0);
    size_t at = 0;

    while (list != NULL && at < pem->len) {
        const char *stop = memmem(pem->data + at, pem->len - at, end, sizeof(end) - 1);
        size_t n = stop ? (size_t)(stop - (pem->data + at)) + sizeof(end) - 1 : pem->len - at;
        PyObject *s = PyUnicode_DecodeASCII(pem->data + at, (Py_ssize_t)n, "replace");

        if (s == NULL || PyList_Append(list, s) < 0) {
            Py_CLEAR(list);
        }
        Py_XDECREF(s);
        at += n;
    }
    return list;
}

/* scope["extensions"]["tls"] (the ASGI TLS extension): the connection's version, cipher suite and certificates. */
static PyObject *
tls_extension(const pt_request_t *req)
{
    const pt_tls_t *t = req->tls;
    pt_buf_t pem = { 0 }, name = { 0 };
    const char *verify_error = "", *cert = pt_tls_server_cert(t);
    kept_t *k = kept_here();
    PyObject *tls = NULL;

    if (k != NULL && k->server_cert_of != cert) {
        Py_XSETREF(k->server_cert, PyUnicode_FromString(cert));
        k->server_cert_of = k->server_cert ? cert : NULL;
    }
    pt_tls_client_cert(t, &pem, &name, &verify_error);
    tls = Py_BuildValue("{s:O,s:N,s:N,s:N,s:i,s:i}", "server_cert", k && k->server_cert ? k->server_cert : Py_None,
                        "client_cert_chain", pem_list(&pem), "client_cert_name", str_or_none(name.data, name.len),
                        "client_cert_error", str_or_none(verify_error, strlen(verify_error)), "tls_version",
                        pt_tls_version_number(t), "cipher_suite", pt_tls_cipher_number(t));
    pt_buf_free(&pem);
    pt_buf_free(&name);
    return tls;
}

/* Sets scope["extensions"] to `base` (or {}) with "tls" added, on a TLS connection. 0, or -1 with an exception. */
static int
set_extensions(PyObject *scope, const pt_request_t *req, PyObject *base)
{
    PyObject *ext, *tls;
    int r;

    if (req->tls == NULL) {
        return base != NULL ? PyDict_SetItem(scope, pt_str.extensions, base) : 0;
    }
    ext = base != NULL ? PyDict_Copy(base) : PyDict_New();
    tls = ext != NULL ? tls_extension(req) : NULL;
    r = tls != NULL && PyDict_SetItemString(ext, "tls", tls) == 0 ? PyDict_SetItem(scope, pt_str.extensions, ext) : -1;
    Py_XDECREF(tls);
    Py_XDECREF(ext);
    return r;
}

PyObject *
pt_asgi_scope_http(const pt_request_t *req)
{
    PyObject *scope = PyDict_Copy(http_template);

    if (scope == NULL
        || PyDict_SetItem(scope, pt_str.http_version,
                          req->h2 != NULL       ? pt_str.v2
                              : req->http_minor ? pt_str.v1_1
                                                : pt_str.v1_0)
            < 0
        || scope_set(scope, pt_str.method, pt_str_method(req->method)) < 0
        || PyDict_SetItem(scope, pt_str.scheme, strcmp(req->url_scheme, "https") == 0 ? pt_str.https : pt_str.http) < 0
        || scope_set(scope, pt_str.path, decode_path(req->path)) < 0
        || scope_set(scope, pt_str.raw_path, PyBytes_FromStringAndSize(req->path.base, (Py_ssize_t)req->path.len)) < 0
        || scope_set(scope, pt_str.query_string, PyBytes_FromStringAndSize(req->query.base, (Py_ssize_t)req->query.len))
            < 0
        || scope_set(scope, pt_str.headers, build_headers(req)) < 0
        || scope_set(scope, pt_str.client, client_tuple(req->remote_addr, req->remote_port)) < 0
        || scope_set(scope, pt_str.server, server_tuple(req)) < 0
        || (pt_asgi.state != NULL && scope_set(scope, pt_str.state, PyDict_Copy(pt_asgi.state)) < 0)
        || (!req->websocket && set_extensions(scope, req, NULL) < 0)) {
        Py_XDECREF(scope);
        return NULL;
    }
    return scope;
}

/* The subprotocols the client offers (Sec-WebSocket-Protocol, comma-separated, in order). New ref. */
static PyObject *
subprotocols(const pt_request_t *req)
{
    PyObject *list = PyList_New(0);
    size_t i;

    for (i = 0; list != NULL && i < req->nheaders; i++) {
        pt_span_t v = req->headers[i].value;

        if (!pt_span_ieq(req->headers[i].name, "sec-websocket-protocol")) {
            continue;
        }
        while (v.len > 0) {
            pt_span_t item = pt_span_next_item(&v, ',');
            PyObject *s = item.len > 0 ? PyUnicode_DecodeLatin1(item.base, (Py_ssize_t)item.len, NULL) : NULL;

            if (item.len > 0 && (s == NULL || PyList_Append(list, s) < 0)) {
                Py_XDECREF(s);
                Py_CLEAR(list);
                break;
            }
            Py_XDECREF(s);
        }
    }
    return list;
}

PyObject *
pt_asgi_scope_ws(const pt_request_t *req)
{
    PyObject *scope = pt_asgi_scope_http(req);
    bool tls = strcmp(req->url_scheme, "https") == 0;

    if (scope == NULL || PyDict_SetItem(scope, pt_str.type, pt_str.websocket) < 0
        || PyDict_DelItem(scope, pt_str.method) < 0
        || PyDict_SetItem(scope, pt_str.scheme, tls ? pt_str.wss : pt_str.ws) < 0
        || scope_set(scope, pt_str.subprotocols, subprotocols(req)) < 0
        || set_extensions(scope, req, ws_extensions) < 0) {
        Py_XDECREF(scope);
        return NULL;
    }
    return scope;
}
