/*
 * Strings made once at start-up, so that the hot path builds environs, scopes and events from shared keys instead
 * of new strings: a dict key built from a C string would be allocated and hashed anew each time. One home for all
 * of them, WSGI's and ASGI's.
 */
#include "gateway.h"

#include <ctype.h>
#include <pthread.h>
#include <strings.h>

pt_strings_t pt_str;

#define HEADER_CACHE 512 /* distinct header names remembered; more are built per request */

typedef struct {
    char name[64]; /* lower-cased header name */
    size_t len;
    PyObject *key; /* set last, with a release store: an entry whose key is there is whole */
} pt_key_entry_t;

/* Shared by every thread that builds environs, which may run at once (free-threaded CPython): entries are filled
 * once each, under key_lock, and read without it. Nothing under key_lock calls into Python. */
static pt_key_entry_t key_cache[HEADER_CACHE];
static pthread_mutex_t key_lock = PTHREAD_MUTEX_INITIALIZER;

/* Header names most requests carry, shared as ASGI's lower-case bytes (bytes are immutable). */
/* clang-format off */
static const char *const COMMON_HEADERS[] = {
    "host", "user-agent", "accept", "accept-encoding", "accept-language", "connection", "content-length",
    "content-type", "cookie", "referer", "origin", "authorization", "cache-control", "upgrade-insecure-requests",
    "x-forwarded-for", "x-forwarded-proto", "x-real-ip", "x-request-id", "if-none-match", "if-modified-since",
    "sec-fetch-mode", "sec-fetch-site", "sec-fetch-dest", "sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform",
    "dnt", "pragma", "te", "transfer-encoding", "expect", "range",
};
#define NCOMMON (sizeof(COMMON_HEADERS) / sizeof(COMMON_HEADERS[0]))
static PyObject *common_header_names[NCOMMON];

int
pt_str_init(void)
{
#define S(field, text)                                                                                                 \
    if ((pt_str.field = PyUnicode_InternFromString(text)) == NULL)                                                     \
    return -1
    S(REQUEST_METHOD, "REQUEST_METHOD");
    S(SCRIPT_NAME, "SCRIPT_NAME");
    S(PATH_INFO, "PATH_INFO");
    S(QUERY_STRING, "QUERY_STRING");
    S(CONTENT_TYPE, "CONTENT_TYPE");
    S(CONTENT_LENGTH, "CONTENT_LENGTH");
    S(SERVER_NAME, "SERVER_NAME");
    S(SERVER_PORT, "SERVER_PORT");
    S(SERVER_PROTOCOL, "SERVER_PROTOCOL");
    S(REMOTE_ADDR, "REMOTE_ADDR");
    S(REMOTE_PORT, "REMOTE_PORT");
    S(wsgi_input, "wsgi.input");
    S(wsgi_url_scheme, "wsgi.url_scheme");
    S(https, "https");
    S(HTTPS, "HTTPS");
    S(on, "on");
    S(HTTP_1_0, "HTTP/1.0");
    S(HTTP_1_1, "HTTP/1.1");
    S(HTTP_2, "HTTP/2");
    S(empty, "");
    S(close, "close");
    S(fileno, "fileno");
    S(tell, "tell");
    S(GET, "GET");
    S(POST, "POST");
    S(HEAD, "HEAD");
    S(PUT, "PUT");
    S(DELETE, "DELETE");
    S(OPTIONS, "OPTIONS");
    S(PATCH, "PATCH");
    S(type, "type");
    S(body, "body");
    S(more_body, "more_body");
    S(status, "status");
    S(headers, "headers");
    S(state, "state");
    S(asgi, "asgi");
    S(http_version, "http_version");
    S(method, "method");
    S(scheme, "scheme");
    S(path, "path");
    S(raw_path, "raw_path");
    S(query_string, "query_string");
    S(root_path, "root_path");
    S(client, "client");
    S(server, "server");
    S(http, "http");
    S(http_request, "http.request");
    S(v1_0, "1.0");
    S(v1_1, "1.1");
    S(v2, "2");
    S(websocket, "websocket");
    S(ws, "ws");
    S(wss, "wss");
    S(subprotocols, "subprotocols");
    S(extensions, "extensions");
#undef S
    pt_str.empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    if (pt_str.empty_bytes == NULL) {
        return -1;
    }
    for (size_t i = 0; i < NCOMMON; i++) {
        if ((common_header_names[i] = PyBytes_FromString(COMMON_HEADERS[i])) == NULL) {
            return -1;
        }
    }
    return 0;
}

PyObject *
pt_str_method(pt_span_t m)
{
    PyObject *s = NULL;

    switch (m.len) {
    case 3: s = memcmp(m.base, "GET", 3) == 0 ? pt_str.GET : memcmp(m.base, "PUT", 3) == 0 ? pt_str.PUT : NULL; break;
    case 4:
        s = memcmp(m.base, "POST", 4) == 0 ? pt_str.POST : memcmp(m.base, "HEAD", 4) == 0 ? pt_str.HEAD : NULL;
        break;
    case 5: s = memcmp(m.base, "PATCH", 5) == 0 ? pt_str.PATCH : NULL; break;
    case 6: s = memcmp(m.base, "DELETE", 6) == 0 ? pt_str.DELETE : NULL; break;
    case 7: s = memcmp(m.base, "OPTIONS", 7) == 0 ? pt_str.OPTIONS : NULL; break;
    }
    if (s != NULL) {
        return Py_NewRef(s);
    }
    return PyUnicode_DecodeLatin1(m.base, (Py_ssize_t)m.len, NULL);
}

static PyObject *
build_key(pt_span_t name)
{
    char buf[256];
    char *p = buf;
    size_t i;
    bool cgi = pt_span_ieq(name, "content-type") || pt_span_ieq(name, "content-length");
    PyObject *s;

    if (name.len + 6 > sizeof(buf)) {
        p = PyMem_Malloc(name.len + 6);
        if (p == NULL) {
            return PyErr_NoMemory();
        }
    }
    /* CGI: Content-Type and Content-Length become CONTENT_TYPE and CONTENT_LENGTH, the rest HTTP_NAME. */
    size_t n = 0;
    if (!cgi) {
        memcpy(p, "HTTP_", 5);
        n = 5;
    }
    for (i = 0; i < name.len; i++) {
        char ch = name.base[i];

        p[n++] = ch == '-' ? '_' : (char)toupper((unsigned char)ch);
    }
    s = PyUnicode_DecodeLatin1(p, (Py_ssize_t)n, NULL);
    if (p != buf) {
        PyMem_Free(p);
    }
    return s;
}

PyObject *
pt_str_header_key(pt_span_t name)
{
    uint32_t h = 2166136261u;
    size_t i, slot;
    char lower[64];
    PyObject *key;

    if (name.len >= sizeof(lower)) {
        return build_key(name);
    }
    for (i = 0; i < name.len; i++) {
        lower[i] = (char)tolower((unsigned char)name.base[i]);
        h = (h ^ (uint8_t)lower[i]) * 16777619u;
    }
    /* Open addressing over a fixed table. */
    for (slot = h % HEADER_CACHE, i = 0; i < 8; i++, slot = (slot + 1) % HEADER_CACHE) {
        pt_key_entry_t *e = &key_cache[slot];
        PyObject *cached = __atomic_load_n(&e->key, __ATOMIC_ACQUIRE);

        if (cached == NULL) {
            key = build_key(name);
            if (key == NULL) {
                return NULL;
            }
            PyUnicode_InternInPlace(&key);
            pthread_mutex_lock(&key_lock);
            if (e->key == NULL) { /* else another thread filled the slot meanwhile: this key stays uncached */
                memcpy(e->name, lower, name.len);
                e->len = name.len;
                __atomic_store_n(&e->key, Py_NewRef(key), __ATOMIC_RELEASE);
            }
            pthread_mutex_unlock(&key_lock);
            return key;
        }
        if (e->len == name.len && memcmp(e->name, lower, name.len) == 0) {
            return Py_NewRef(cached);
        }
    }
    return build_key(name);
}

PyObject *
pt_str_header_name_lower(pt_span_t n)
{
    PyObject *name;
    size_t i;

    for (i = 0; i < NCOMMON; i++) {
        PyObject *k = common_header_names[i];

        if ((size_t)PyBytes_GET_SIZE(k) == n.len && strncasecmp(PyBytes_AS_STRING(k), n.base, n.len) == 0) {
            return Py_NewRef(k);
        }
    }
    name = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n.len);
    if (name != NULL) {
        for (i = 0; i < n.len; i++) {
            PyBytes_AS_STRING(name)[i] = (char)tolower((unsigned char)n.base[i]);
        }
    }
    return name;
}
