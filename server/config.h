/*
 * Everything the command line sets. Parsed once in main.c, read-only afterwards, shared by server/ and gateway/.
 */
#ifndef PT_CONFIG_H
#define PT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "forwarded.h"

#define PT_MAX_BINDS 16

typedef enum {
    PT_LOG_DEBUG,
    PT_LOG_INFO,
    PT_LOG_WARNING,
    PT_LOG_ERROR,
    PT_LOG_CRITICAL,
} pt_log_level_t;

typedef enum {
    PT_IFACE_AUTO,
    PT_IFACE_WSGI,
    PT_IFACE_ASGI,
    PT_IFACE_ASGI2, /* legacy double callable: app(scope) -> instance(receive, send) */
} pt_interface_t;

/* Which interpreter runs the app (gateway/host.c). */
typedef enum {
    PT_INTERP_AUTO,     /* host when ponte's extension module is installed, else embedded */
    PT_INTERP_HOST,     /* exec Debian's python3 and run there, ponte loaded as an extension module */
    PT_INTERP_EMBEDDED, /* the libpython linked into the ponte executable */
} pt_interpreter_t;

/* --http: which HTTP versions a connection may speak (server/h2.h). */
typedef enum {
    PT_HTTP_AUTO,
    PT_HTTP_1,
    PT_HTTP_2,
} pt_http_mode_t;

typedef enum {
    PT_LIFESPAN_AUTO,
    PT_LIFESPAN_ON,
    PT_LIFESPAN_OFF,
} pt_lifespan_t;

typedef struct {
    const char *app; /* "pkg.module:callable" or "path/file.py:callable" */
    const char *binds[PT_MAX_BINDS];
    int nbinds;
    signed char bind_scheme[PT_MAX_BINDS]; /* a --bind's https:// (1) or http:// (0) prefix, or -1: none */
    bool listen_tls[2 * PT_MAX_BINDS];     /* whether each listening socket serves TLS: binds then --fd's (a
                                            * worker's, in that order) */
    int unix_mode;                         /* --unix-mode: permissions of unix sockets made by --bind; -1: umask's */
    int fds[PT_MAX_BINDS];                 /* --fd: inherited listening sockets (systemd socket activation) */
    int nfds;
    int processes;                /* --processes: worker processes under a master; 0 runs one process */
    bool reload;                  /* development: reload the workers when a .py file under --app-dir changes */
    bool reuse_port;              /* each worker slot gets its own SO_REUSEPORT socket per address */
    uint64_t max_requests;        /* a worker process is replaced after this many requests; 0 never */
    uint64_t max_requests_jitter; /* plus a random 0..jitter, so that workers do not all restart at once */
    double timeout;               /* a request in the app longer than this replaces its worker; 0 never */
    pt_trust_t forwarded_allow;   /* proxies whose X-Forwarded-* / Forwarded headers are believed */
    int worker_slot;              /* set by the master for its workers: 1..N; 0 in a master or lone process */
    int control_fd;               /* a worker's line to its master (ready, beat, retire) */
    pt_interface_t interface;
    pt_lifespan_t lifespan; /* ASGI lifespan events */
    int threads;            /* WSGI pool size; 0 runs the app on the loop thread */
    int loops;              /* ASGI: event loops, each on its own thread (loops.h); 1 is the main thread's alone */
    const char *app_dir;
    const char *virtualenv; /* --virtualenv DIR, or NULL: the venv ponte is installed in, else $VIRTUAL_ENV */
    const char *root_path;  /* where the app is mounted: ASGI root_path, WSGI SCRIPT_NAME */
    bool access_log;
    bool access_log_gil; /* append the request's GIL wait to access log lines */
    pt_log_level_t log_level;
    size_t max_header_size;    /* request line + header block, bytes -> 431 */
    size_t max_headers;        /* number of header lines -> 431 */
    uint64_t max_body_size;    /* bytes -> 413 */
    double keep_alive_timeout; /* idle keep-alive connection, seconds */
    double header_timeout;     /* complete request head, seconds -> 408 */
    double client_timeout;     /* body bytes or response drain stalled, seconds */
    double graceful_timeout;   /* in-flight requests on SIGTERM, seconds */
    int backlog;
    size_t max_connections;   /* open connections beyond which accepting pauses; 0: no limit */
    size_t limit_concurrency; /* requests in the app beyond which new ones get 503; 0: no limit */
    bool request_buffering;   /* worker threads get a body once it is in (or PT_BODY_HIGH of it), not at the head */
    uint64_t min_body_rate;   /* bytes/s a request body must average after a grace period; 0: any */
    const char *python_executable; /* the interpreter outside a venv: sys.executable, the host under PT_INTERP_HOST */
    pt_interpreter_t interpreter;
    double gil_report;                        /* seconds between GIL summary lines in the log; 0: none */
    char gil_load_io[400], gil_load_cpu[400]; /* --gil-load: the page's load buttons' paths ("" when none) */
    char gil_load_shared[400];                /* --gil-load's third path, optional ("" when none) */
    int gil_routes;              /* routes kept apart in the per-route GIL table (the rest are "other"); 0: none */
    const char *gil_monitor;     /* address of the live GIL view, or NULL */
    const char *gil_trace;       /* Chrome trace-event JSON file, or NULL */
    int gil_sample_hz;           /* samples a second of the GIL holder's Python stack; 0: none */
    const char *gil_profile;     /* collapsed-stack file of those samples, written at exit, or NULL */
    bool gil_probe;              /* measure the GIL (default); off only to measure what measuring costs */
    bool ws;                     /* ASGI apps get WebSocket upgrades; off: an upgrade is served as plain HTTP */
    uint64_t ws_max_size;        /* the largest WebSocket message accepted, bytes (after inflating) -> 1009 */
    double ws_ping_interval;     /* seconds between pings to an idle WebSocket peer; 0: none */
    double ws_ping_timeout;      /* seconds a ping waits for its pong before the peer counts as gone; 0: ever */
    double ws_close_timeout;     /* seconds a close frame we sent waits for the client's */
    bool ws_per_message_deflate; /* negotiate permessage-deflate (RFC 7692) when the client offers it */
    /* TLS (server/tls.h), with uvicorn's names: on every listening socket but an http:// --bind, once a certificate
     * is given. */
    const char *ssl_certfile, *ssl_keyfile, *ssl_keyfile_password, *ssl_ca_certs, *ssl_ciphers;
    int ssl_cert_reqs;   /* pt_tls_cert_reqs_t: 0 none, 1 optional, 2 required */
    int ssl_min_version; /* 12 or 13 */
    pt_http_mode_t http; /* --http */
} pt_config_t;

/* Parses argv into cfg. Returns 0 to run, 1 when --help/--version was printed, -1 on a bad option (printed). */
int pt_config_parse(pt_config_t *cfg, int argc, char **argv);
const char *pt_interface_name(pt_interface_t i);

#endif
