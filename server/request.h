/*
 * One HTTP request as the app sees it, and the two channels between the loop and whoever runs the app:
 * request body bytes flowing in, response bytes flowing out.
 *
 * Threads: the loop thread owns the connection. When the app runs on a worker thread, the worker may touch a request
 * only through the pt_req_* functions below, which lock `lock` for the few fields both sides share. Those functions
 * never block unless their name says wait/block; the caller releases the GIL before any call that may block.
 * request.c is the one file that takes `lock`: the loop's side of both channels is there too (the last section).
 */
#ifndef PT_REQUEST_H
#define PT_REQUEST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "buf.h"
#include "resp.h"

typedef struct pt_conn_s pt_conn_t;
typedef struct pt_request_s pt_request_t;

/* Flags for pt_req_send. */
enum {
    PT_SEND_END = 1,   /* the response is complete */
    PT_SEND_DONE = 2,  /* the app is finished with the request: the server may reuse it */
    PT_SEND_ABORT = 4, /* the response cannot be completed: close the connection after what was sent */
};

/* Body back-pressure: the loop stops reading above HIGH unread bytes and resumes below LOW. */
#define PT_BODY_HIGH (64 * 1024)
#define PT_BODY_LOW (16 * 1024)
/* Response back-pressure: the app waits while more than HIGH bytes are queued, until they drop to LOW. */
#define PT_OUT_HIGH (256 * 1024)
#define PT_OUT_LOW (64 * 1024)
/* A loop-thread app gets its whole body at once: past this size it waits in an unlinked temporary file. */
#define PT_BODY_SPOOL (1024 * 1024)

typedef enum {
    PT_BODY_ERR_NONE = 0,
    PT_BODY_ERR_TOO_LARGE, /* over --max-body-size: answered 413 if the response has not started */
    PT_BODY_ERR_INVALID,   /* malformed chunked framing: 400 */
    PT_BODY_ERR_GONE,      /* the client closed or reset the connection */
    PT_BODY_ERR_TIMEOUT,   /* no body bytes for --client-timeout */
} pt_body_err_t;

struct pt_request_s {
    pt_conn_t *conn;

    /* The head, valid until the request is finished. Spans point into the connection's head arena. */
    pt_span_t method;
    pt_span_t target;    /* the request-target exactly as received */
    pt_span_t path;      /* origin-form path, still percent-encoded */
    pt_span_t query;     /* after '?', without the fragment */
    pt_span_t authority; /* absolute-form's "host:port" (it replaced the Host header's value), else empty */
    pt_header_t *headers;
    size_t nheaders;
    uint8_t http_minor;
    /* Whether the connection is kept after this response. Atomic: the loop clears it (a stop, a body error) while
     * a worker may be writing the response head that says it. */
    _Atomic bool keep_alive;
    bool is_head;
    bool expect_continue;
    bool chunked;
    bool websocket;         /* a WebSocket opening handshake, for an app that takes them (server/ws.h) */
    int64_t content_length; /* -1 when absent */

    /* Where it came from and arrived; strings owned by the connection or its listener. */
    const char *remote_addr;
    int remote_port;
    const char *server_name;
    int server_port;
    const char *url_scheme;
    const struct pt_tls_s *tls; /* the connection's TLS (server/tls.h: version, cipher, client certificate), or NULL */
    struct pt_h2_stream_s *h2;  /* HTTP/2: the stream this request came on (server/h2.h), or NULL for HTTP/1.x */

    uint64_t start_ns;
    uint64_t seq; /* counts the connection's requests: tells a request from its successor */
    /* GIL wait of the thread running the app: to start it, and while it ran (ns; --access-log-gil). */
    uint64_t gil_wait_start_ns, gil_wait_run_ns;

    /* The response, written by whoever runs the app and read by the loop once the app is done. */
    pt_resp_t resp;
    void *app_data;

    /* Shared between the loop and a worker; guarded by `lock`. */
    uv_mutex_t lock;
    uv_cond_t cond;
    pt_buf_t body; /* received, not yet read by the app */
    int body_fd;   /* loop-thread apps: the body spooled to a temporary file, or -1 */
    uint64_t body_file_len, body_file_pos;
    size_t body_rpos; /* read offset into body */
    uint64_t body_received;
    bool body_eof; /* the whole body has been received */
    pt_body_err_t body_err;
    bool body_read_paused; /* the loop stopped reading because `body` is full */
    bool continue_sent;    /* "100 Continue" was sent (or is not needed) */
    bool waiting;          /* a worker waits on cond */
    size_t out_pending;    /* response bytes handed to the loop and not yet written to the socket */
    bool gone;             /* the client went away: further output is dropped */
    bool client_eof;       /* the client closed its side (it may still read): nothing more will come */
};

/* How the app's response to req is framed (resp.h): its HTTP version, HEAD or not, keep-alive or not. */
static inline pt_resp_ctx_t
pt_req_resp_ctx(const pt_request_t *req)
{
    return (pt_resp_ctx_t){ req->http_minor, req->is_head, req->keep_alive, req->h2 != NULL };
}

/* Whether the calling thread is the one running uv_run (marked once, by main, with pt_set_loop_thread). */
bool pt_on_loop_thread(void);
void pt_set_loop_thread(void);

/*
 * Reads up to n body bytes into dst, stopping after `delim` when delim >= 0 (readline). Returns the count, 0 at the
 * end of the body, -EAGAIN when nothing is buffered and `block` is false, or -EPIPE when the body cannot be completed
 * (see req->body_err). The first read of a request that sent "Expect: 100-continue" sends "100 Continue".
 */
ssize_t pt_req_read(pt_request_t *req, char *dst, size_t n, int delim, bool block);

/*
 * Hands `out` (its bytes, the buffer is left empty) to the connection. Returns 0, or -EPIPE when the client is
 * gone (the bytes are dropped).
 */
int pt_req_send(pt_request_t *req, pt_buf_t *out, unsigned flags);

/* Whether the app should wait before producing more output (more than PT_OUT_HIGH bytes queued). */
bool pt_req_must_wait(pt_request_t *req);
/* Blocks a worker until the queue drops to PT_OUT_LOW or the client goes. Returns 0 or -EPIPE. Workers only. */
int pt_req_wait_drain(pt_request_t *req);
/* A loop-thread app stops producing output until its on_drain (called when the queue drops to PT_OUT_LOW). */
void pt_req_suspend(pt_request_t *req);
/* Whether the app has read the whole body (loop-thread apps). */
bool pt_req_body_complete(pt_request_t *req);
/* Why the body could not be read (PT_BODY_ERR_NONE when it could). */
pt_body_err_t pt_req_body_error(pt_request_t *req);
/* The status for an app that failed before responding: 500, unless the body was at fault (413, 400, 408). */
int pt_req_error_status(pt_request_t *req);
/* Whether the client is gone. */
bool pt_req_gone(pt_request_t *req);

/*
 * Sends `count` bytes of file `fd` from `offset` with sendfile(2), after everything queued before it. Workers only;
 * blocks. Returns the bytes sent or a negative errno.
 */
ssize_t pt_req_sendfile(pt_request_t *req, int fd, off_t offset, size_t count);

/* ---- The loop's side of the channels (conn.c, out.c): loop thread only ---- */

/* Once per connection: the lock and condition variable. 0 or a negative libuv error. */
int pt_req_init(pt_request_t *req, pt_conn_t *conn);
void pt_req_destroy(pt_request_t *req);
/* A new request's head is parsed: everything the previous request on the connection left is reset. */
void pt_req_begin(pt_request_t *req, bool client_eof);
/* Between requests: the spooled body and the body buffer are given back. */
void pt_req_release(pt_request_t *req);

/* What pt_req_body_push asks of the connection. */
enum {
    PT_PUSH_PAUSE = 1, /* stop reading the socket: the app has PT_BODY_HIGH bytes unread */
    PT_PUSH_WAKE = 2,  /* a worker waits for these bytes: wake it before the loop next polls */
};
/* Body bytes arrived. Returns PT_PUSH_* flags, or a negative errno when they could not be kept (spool failed). */
int pt_req_body_push(pt_request_t *req, const char *p, size_t n);
/* The whole body has arrived. */
void pt_req_body_end(pt_request_t *req);
/* The body cannot be completed (malformed, too large, the client left): a reader gets -EPIPE. */
void pt_req_body_fail(pt_request_t *req, pt_body_err_t why);
/* The client is gone: output is dropped from now on, and a body not yet complete fails with `why`. */
void pt_req_client_gone(pt_request_t *req, pt_body_err_t why);
/* A worker read its body down to PT_BODY_LOW (PT_MSG_RESUME_READ), or asked for "100 Continue" (PT_MSG_CONTINUE):
 * done on the request's connection, or on its HTTP/2 stream. */
void pt_req_loop_resume_reading(pt_request_t *req);
void pt_req_loop_continue(pt_request_t *req);
/* Wakes a worker waiting on the request, if any (body bytes arrived since it began waiting). */
void pt_req_wake(pt_request_t *req);
/* n of a worker's response bytes reached the socket, or never will: a worker waiting for the drain may go on. */
void pt_req_wrote(pt_request_t *req, size_t n);
/* Whether the app waits on the client: for body bytes it has not sent, or for it to read the response. */
bool pt_req_waits_on_client(pt_request_t *req, bool app_on_loop);

#endif
