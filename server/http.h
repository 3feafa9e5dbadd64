/*
 * The HTTP/1.1 request parser of one connection: llhttp, the checks llhttp leaves to us, and the head arena that
 * the request's spans point into. It knows nothing of sockets or of the app: it is fed bytes, fills in the
 * connection's pt_request_t, and tells the connection (the pt_conn_on_* calls below) what it found.
 */
#ifndef PT_HTTP_H
#define PT_HTTP_H

#include <llhttp.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "chunked.h"
#include "config.h"
#include "request.h"

/* The longest request method accepted (any token is a method: RFC 9110 9.1). */
#define PT_METHOD_MAX 32

typedef struct pt_conn_s pt_conn_t;

/* Offsets into the head arena of one header line (the arena may move while it grows). */
typedef struct {
    uint32_t name_off, name_len, value_off, value_len;
} pt_hoff_t;

typedef struct {
    llhttp_t parser;
    const pt_config_t *cfg;
    pt_conn_t *conn;     /* told of heads, body bytes and message ends */
    pt_request_t *req;   /* filled in when a head is complete */
    bool in_message;     /* a request has begun and its message is not yet complete */
    bool paused;         /* paused at the end of a message until pt_http_resume */
    bool upgrade_pause;  /* ... with HPE_PAUSED_UPGRADE (resumed differently) */
    size_t idle_bytes;   /* blank lines received between requests */
    uint64_t body_bytes; /* body bytes of the current request, against --max-body-size */
    /* The request line and head, scanned before llhttp sees them (see line_scan in http.c). */
    uint8_t line;        /* where the scan is: blank lines, method, target, "HTTP/", the rest of the head */
    uint8_t version_pos; /* bytes of "HTTP/" matched */
    bool scan_cr;        /* the previous byte was a CR */
    uint8_t scan_m;      /* CR and LF bytes in a row: 4 ends the head */
    char method[PT_METHOD_MAX + 1];
    uint8_t method_len;
    bool in_chunked; /* the body is chunked: ponte decodes it (chunked.c), llhttp was told to skip it */
    pt_chunked_t chunked;

    /* Head arena: request-target and header bytes of the current request. */
    pt_buf_t head;
    size_t head_bytes; /* counted against --max-header-size */
    pt_hoff_t *hoff;
    pt_header_t *hdrs; /* the same as spans, filled when the head is complete */
    size_t nhdr, hcap;
    int last_cb; /* 0 none, 1 field, 2 value: to join field/value spans split across reads */
    uint32_t url_off, url_len;
    int error_status;      /* set by a callback: reply with this status and close */
    const char *error_why; /* and why, for the log (a policy rather than a parse error) */
} pt_http_t;

/* What pt_http_execute found in the bytes it was given. */
typedef enum {
    PT_HTTP_MORE,     /* every byte was parsed; more are needed */
    PT_HTTP_MESSAGE,  /* a message ended: paused there, *used bytes parsed; the rest waits for resume */
    PT_HTTP_NOT_HTTP, /* what follows an Upgrade request is another protocol */
    PT_HTTP_ERROR,    /* the request is malformed or refused: see pt_http_error */
} pt_http_result_t;

void pt_http_settings_init(llhttp_settings_t *s);
void pt_http_init(pt_http_t *h, const llhttp_settings_t *settings, const pt_config_t *cfg, pt_conn_t *conn,
                  pt_request_t *req);
pt_http_result_t pt_http_execute(pt_http_t *h, const char *data, size_t n, size_t *used);
/* After PT_HTTP_ERROR: the status to answer with, and why (for the log). */
int pt_http_error(const pt_http_t *h, const char **why);
/* Whether the request being parsed is a HEAD whose head is complete: an answer to it carries no body. */
bool pt_http_is_head(const pt_http_t *h);
/* Goes on parsing after PT_HTTP_MESSAGE, once the connection is ready for the next request. */
void pt_http_resume(pt_http_t *h);
/* Gives back the head arena and header tables between requests (an idle connection keeps only its struct). */
void pt_http_release(pt_http_t *h);

/* What the parser tells the connection (conn.c). Each returns 0, or an HTTP status to answer with and close. */
int pt_conn_on_message_begin(pt_conn_t *c);
int pt_conn_on_headers(pt_conn_t *c);
int pt_conn_on_body(pt_conn_t *c, const char *p, size_t n);
int pt_conn_on_message(pt_conn_t *c);

#endif
