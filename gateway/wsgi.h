/*
 * Inside WSGI: what wsgi.c (running a request) and wsgi_ctx.c (the request's context: start_response, write() and
 * the spare contexts each thread keeps) share. The rest of gateway/ sees only gateway.h's pt_wsgi_*.
 */
#ifndef PT_WSGI_H
#define PT_WSGI_H

#include "gateway.h"

typedef struct pt_ctx_s {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    pt_wsgi_t *w;
    pt_request_t *req; /* NULL between requests */
    PyObject *input;   /* wsgi.input, reused */
    PyObject *write;   /* the write() callable (wsgi_ctx.c), which points back at this context */
    PyObject *status;  /* from start_response */
    PyObject *headers; /* a list, copied from start_response */
    bool started;      /* start_response was called */
    bool head_sent;    /* the head is in `out` or on the wire */
    PyObject *result;  /* what the app returned */
    PyObject *iter;    /* iter(result), or NULL when `seq` is used */
    PyObject *seq;     /* result itself when it is a list or tuple (no iterator needed) */
    PyObject *held;    /* a chunk taken from the iterable while the client is slow, sent once it drains */
    Py_ssize_t pos;
    int64_t known_length;  /* total body size when known before the head is written */
    uint64_t t0;           /* when the app got the request (for --gil-trace) */
    uint64_t hold0, wait0; /* this thread's GIL held and waited totals then (--access-log-gil, --gil-routes) */
    int route;             /* what the GIL sampler counts this request's Python under (-1: none) */
    pt_buf_t out;          /* bytes for the client not yet handed to the connection */
    pt_header_t *hspans;
    size_t hcap;
    struct pt_ctx_s *next_free; /* in its thread's spare contexts (wsgi_ctx.c) */
} pt_ctx_t;

struct pt_wsgi_s {
    PyObject *app;
    const pt_config_t *cfg;
    pt_environ_t environ;
};

int pt_wsgi_ctx_types_ready(void);
/* A context for a request on this thread: one of its spares, or a new one. New ref, or NULL with an exception. */
pt_ctx_t *pt_wsgi_ctx_get(pt_wsgi_t *w);
/* Ends the context's request and keeps it as a spare of this thread, unless the app kept a part of it. */
void pt_wsgi_ctx_put(pt_ctx_t *ctx);

/* The status line and headers into ctx->out. 0, or -1 with an exception set. */
int pt_wsgi_write_head(pt_ctx_t *ctx);
/* Body bytes into ctx->out, the head first if it is not out yet. 0, or -1 with an exception set. */
int pt_wsgi_emit(pt_ctx_t *ctx, const char *p, size_t n);
/* ctx->out to the connection. 0, or -1 when the client is gone. */
int pt_wsgi_flush(pt_ctx_t *ctx, unsigned flags);
/* A worker waits (attached to no Python) for a slow client. -1 when it went away. */
int pt_wsgi_wait_drain(pt_ctx_t *ctx);

#endif
