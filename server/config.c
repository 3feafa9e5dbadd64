#include "config.h"
#include "listen.h"

#include <errno.h>
#include <stddef.h>
#include <getopt.h>
#include <llhttp.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#ifndef PT_VERSION
#define PT_VERSION "0.0.0"
#endif

const char *pt_app_runtime_version(void);

static const char usage[] =
    "usage: ponte [options] APP\n"
    "\n"
    "Serve a Python WSGI (or ASGI) application over HTTP/1.1 and HTTP/2.\n"
    "APP is package.module:callable or path/to/file.py:callable (callable defaults to 'application', then 'app').\n"
    "\n"
    "options:\n"
    "  -b, --bind ADDR            listen on HOST:PORT, [IPv6]:PORT or unix:/path; repeatable\n"
    "                             (default 127.0.0.1:8000; port 0 picks a free port); an https:// or http://\n"
    "                             in front says whether it serves TLS (see --ssl-certfile)\n"
    "  -i, --interface KIND       auto, wsgi, asgi or asgi2 (default auto: a coroutine function is ASGI)\n"
    "      --root-path PATH       the path the app is mounted at (ASGI root_path, WSGI SCRIPT_NAME; default none)\n"
    "      --lifespan MODE        ASGI lifespan events: auto, on or off (default auto: used if the app answers)\n"
    "  -t, --threads N            WSGI worker threads; 0 runs the app on the event-loop thread (default 8)\n"
    "      --loops N              ASGI: N event loops, each on its own thread with its own asyncio loop, all\n"
    "                             accepting on the same sockets; on free-threaded CPython they run Python in\n"
    "                             parallel (default 1)\n"
    "      --app-dir DIR          put DIR first on sys.path (default .)\n"
    "  -H, --virtualenv DIR       serve from the virtual environment DIR, of the CPython ponte was built for: its\n"
    "                             packages import, sys.executable is its python (default: the venv ponte is\n"
    "                             installed in, else $VIRTUAL_ENV when a venv is active; --venv too)\n"
    "      --interpreter MODE     host: run inside /usr/bin/python3 (Debian's optimised build), ponte loaded into it\n"
    "                             as an extension module; embedded: in the libpython linked into ponte (about 9%\n"
    "                             slower on pure Python); auto (default): host when ponte's module is installed\n"
    "      --access-log           log one line per request to stdout (default)\n"
    "      --no-access-log        do not\n"
    "      --access-log-gil       add the GIL wait of each request: to start the app, and while it ran (seconds)\n"
    "      --log-level LEVEL      debug, info, warning, error or critical (default info)\n"
    "      --max-header-size N    request line and headers, bytes; larger gets 431 (default 32768)\n"
    "      --max-headers N        header lines; more gets 431 (default 100)\n"
    "      --max-body-size N      request body, bytes; larger gets 413 (default 104857600)\n"
    "      --keep-alive-timeout S close an idle keep-alive connection after S seconds (default 5)\n"
    "      --header-timeout S     a request head must arrive within S seconds, else 408 (default 10)\n"
    "      --client-timeout S     close when a client sends no body or reads no response for S seconds (default 60)\n"
    "      --graceful-timeout S   on SIGTERM/SIGINT, let requests in flight finish for S seconds (default 30)\n"
    "      --backlog N            listen backlog (default 1024)\n"
    "      --max-connections N    accept no more while N connections are open: the rest wait in the backlog\n"
    "                             (default 0: as many as file descriptors allow)\n"
    "      --limit-concurrency N  answer 503 to a request that arrives while N are with the app (default 0: none)\n"
    "      --request-buffering on|off  worker threads get a request with a body once the body is in, or 64 KiB of\n"
    "                             it (on, the default: a slow client then holds no thread); off: at the head, for\n"
    "                             apps that answer while the body arrives\n"
    "      --min-body-rate N      after 5 s, a request body must average N bytes/s, or 408 (default 240; 0: any)\n"
    "      --unix-mode MODE       permissions of a unix:/path socket, in octal, e.g. 660 (default: from the umask)\n"
    "      --http MODE            1: HTTP/1.1 only; 2: HTTP/2 only; auto (default): HTTP/2 for a client that asks\n"
    "                             (ALPN h2 on TLS, the HTTP/2 preface in cleartext: h2c by prior knowledge), else\n"
    "                             HTTP/1.1"
    "\n"
    "TLS (https; every socket serves it once a certificate is given, but a --bind prefixed http://):\n"
    "      --ssl-certfile FILE    the certificate (PEM), then its chain\n"
    "      --ssl-keyfile FILE     its private key (PEM; default: in --ssl-certfile)\n"
    "      --ssl-keyfile-password PW  the key's password, if it is encrypted\n"
    "      --ssl-ca-certs FILE    CA certificates (PEM) to check client certificates against\n"
    "      --ssl-cert-reqs MODE   client certificates: none, optional or required (or 0, 1, 2; default none)\n"
    "      --ssl-ciphers LIST     OpenSSL's cipher list for TLS 1.2 (default OpenSSL's)\n"
    "      --ssl-min-version V    1.2 or 1.3 (default 1.2)\n"
    "      --forwarded-allow-ips LIST  trust X-Forwarded-For, X-Forwarded-Proto and Forwarded from these\n"
    "                             proxies: addresses, networks (10.0.0.0/8), unix, or * (default: none)\n"
    "      --fd N                 accept on the inherited listening socket N (systemd socket activation); repeatable\n"
    "\n"
    "WebSocket (ASGI apps):\n"
    "      --ws MODE              on (or auto) accepts WebSocket upgrades; off (or none) serves them as plain HTTP\n"
    "                             (default on; WSGI apps always get plain HTTP)\n"
    "      --ws-max-size N        the largest message, bytes after inflating; larger closes with 1009 (default\n"
    "                             16777216)\n"
    "      --ws-ping-interval S   ping a peer every S seconds (default 20; 0: never)\n"
    "      --ws-ping-timeout S    close with 1011 when a pong has not come S seconds after its ping (default 20;\n"
    "                             0: wait for ever)\n"
    "      --ws-close-timeout S   after our close frame, wait S seconds for the client's before ending the\n"
    "                             connection (default 10, as the websockets library's close_timeout)\n"
    "      --ws-per-message-deflate on|off  compress messages when the client offers it (RFC 7692; default on)\n"
    "\n"
    "processes:\n"
    "  -p, --processes N          run N worker processes under a master, each with its own interpreter and GIL;\n"
    "                             the master binds the sockets and replaces workers that die; SIGHUP reloads the\n"
    "                             app with no downtime (default 0: one process, no master)\n"
    "      --reload               development: reload when a .py file under --app-dir changes (implies a master\n"
    "                             with one worker unless --processes says more)\n"
    "      --reuse-port           give each worker its own SO_REUSEPORT socket instead of sharing one\n"
    "      --max-requests N       replace a worker after N requests (default 0: never)\n"
    "      --max-requests-jitter N  add a random 0..N to --max-requests per worker (default 0)\n"
    "      --timeout S            replace a worker whose request has been in the app for S seconds with no bytes\n"
    "                             moving, logging where it was stuck (default 0: never)\n"
    "\n"
    "the GIL:\n"
    "      --gil-monitor ADDR     serve the live GIL view (page, /events, /metrics) on ADDR, e.g. 127.0.0.1:8001\n"
    "      --gil-trace FILE       write every GIL hold and wait, and each request, as Chrome trace JSON\n"
    "                             (open it in Perfetto or chrome://tracing; FILE.N for worker N under --processes)\n"
    "      --gil-probe on|off     measure every GIL move (default on; off exists to measure what that costs)\n"
    "      --gil-report S         every S seconds, the GIL: busy %, waiters, switches/s, forced switches/s and "
    "hold/wait %\n"
    "                             per thread; a live table when stderr is a terminal, a log line otherwise (default "
    "off)\n"
    "      --gil-load IO,CPU[,SHARED]  the page's load buttons: 8 clients on the I/O-bound path IO, on the\n"
    "                             CPU-bound path CPU, or 4 and 4, and with SHARED 8 on a path whose requests\n"
    "                             take one lock, for 10 s, on the server's loopback address (e.g.\n"
    "                             '/io?delay=0.01,/cpu?n=20000'; needs --gil-monitor)\n"
    "      --gil-routes N         GIL and latency per route (the path, numeric and UUID-like segments as {n} and\n"
    "                             {uuid}) for the first N seen, the rest as \"other\" (default 20; 0: none)\n"
    "      --gil-sample-hz N      sample the GIL holder's Python stack N times a second, for the page's top\n"
    "                             functions, --gil-profile and --gil-trace (default 100; 0: none; at most 1000)\n"
    "      --gil-profile FILE     write those samples at exit as collapsed stacks, \"route;outer;...;inner count\"\n"
    "                             (flamegraph.pl, speedscope; FILE.N for worker N under --processes)\n"
    "  -V, --version              print the version and exit\n"
    "  -h, --help                 print this help and exit\n";

enum {
    OPT_APP_DIR = 256,
    OPT_ACCESS_LOG,
    OPT_NO_ACCESS_LOG,
    OPT_LOG_LEVEL,
    OPT_MAX_HEADER_SIZE,
    OPT_MAX_HEADERS,
    OPT_MAX_BODY_SIZE,
    OPT_KEEP_ALIVE_TIMEOUT,
    OPT_HEADER_TIMEOUT,
    OPT_CLIENT_TIMEOUT,
    OPT_GRACEFUL_TIMEOUT,
    OPT_BACKLOG,
    OPT_LIFESPAN,
    OPT_ROOT_PATH,
    OPT_GIL_REPORT,
    OPT_GIL_ROUTES,
    OPT_GIL_LOAD,
    OPT_GIL_MONITOR,
    OPT_GIL_TRACE,
    OPT_GIL_SAMPLE_HZ,
    OPT_GIL_PROFILE,
    OPT_ACCESS_LOG_GIL,
    OPT_GIL_PROBE,
    OPT_FD,
    OPT_REUSE_PORT,
    OPT_MAX_REQUESTS,
    OPT_MAX_REQUESTS_JITTER,
    OPT_TIMEOUT,
    OPT_WORKER,
    OPT_FORWARDED_ALLOW_IPS,
    OPT_UNIX_MODE,
    OPT_RELOAD,
    OPT_MAX_CONNECTIONS,
    OPT_LIMIT_CONCURRENCY,
    OPT_REQUEST_BUFFERING,
    OPT_MIN_BODY_RATE,
    OPT_WS,
    OPT_WS_MAX_SIZE,
    OPT_WS_PING_INTERVAL,
    OPT_WS_PING_TIMEOUT,
    OPT_WS_CLOSE_TIMEOUT,
    OPT_WS_PER_MESSAGE_DEFLATE,
    OPT_INTERPRETER,
    OPT_LOOPS,
    OPT_SSL_CERTFILE,
    OPT_SSL_KEYFILE,
    OPT_SSL_KEYFILE_PASSWORD,
    OPT_SSL_CA_CERTS,
    OPT_SSL_CERT_REQS,
    OPT_SSL_CIPHERS,
    OPT_SSL_MIN_VERSION,
    OPT_HTTP,
};

static const struct option options[] = {
    { "bind", required_argument, NULL, 'b' },
    { "interface", required_argument, NULL, 'i' },
    { "threads", required_argument, NULL, 't' },
    { "loops", required_argument, NULL, OPT_LOOPS },
    { "ssl-certfile", required_argument, NULL, OPT_SSL_CERTFILE },
    { "ssl-keyfile", required_argument, NULL, OPT_SSL_KEYFILE },
    { "ssl-keyfile-password", required_argument, NULL, OPT_SSL_KEYFILE_PASSWORD },
    { "ssl-ca-certs", required_argument, NULL, OPT_SSL_CA_CERTS },
    { "ssl-cert-reqs", required_argument, NULL, OPT_SSL_CERT_REQS },
    { "ssl-ciphers", required_argument, NULL, OPT_SSL_CIPHERS },
    { "ssl-min-version", required_argument, NULL, OPT_SSL_MIN_VERSION },
    { "http", required_argument, NULL, OPT_HTTP },
    { "app-dir", required_argument, NULL, OPT_APP_DIR },
    { "interpreter", required_argument, NULL, OPT_INTERPRETER },
    { "access-log", no_argument, NULL, OPT_ACCESS_LOG },
    { "no-access-log", no_argument, NULL, OPT_NO_ACCESS_LOG },
    { "access-log-gil", no_argument, NULL, OPT_ACCESS_LOG_GIL },
    { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
    { "max-header-size", required_argument, NULL, OPT_MAX_HEADER_SIZE },
    { "max-headers", required_argument, NULL, OPT_MAX_HEADERS },
    { "max-body-size", required_argument, NULL, OPT_MAX_BODY_SIZE },
    { "keep-alive-timeout", required_argument, NULL, OPT_KEEP_ALIVE_TIMEOUT },
    { "header-timeout", required_argument, NULL, OPT_HEADER_TIMEOUT },
    { "client-timeout", required_argument, NULL, OPT_CLIENT_TIMEOUT },
    { "graceful-timeout", required_argument, NULL, OPT_GRACEFUL_TIMEOUT },
    { "backlog", required_argument, NULL, OPT_BACKLOG },
    { "max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS },
    { "limit-concurrency", required_argument, NULL, OPT_LIMIT_CONCURRENCY },
    { "request-buffering", required_argument, NULL, OPT_REQUEST_BUFFERING },
    { "min-body-rate", required_argument, NULL, OPT_MIN_BODY_RATE },
    { "virtualenv", required_argument, NULL, 'H' },
    { "venv", required_argument, NULL, 'H' },
    { "ws", required_argument, NULL, OPT_WS },
    { "ws-max-size", required_argument, NULL, OPT_WS_MAX_SIZE },
    { "ws-ping-interval", required_argument, NULL, OPT_WS_PING_INTERVAL },
    { "ws-ping-timeout", required_argument, NULL, OPT_WS_PING_TIMEOUT },
    { "ws-close-timeout", required_argument, NULL, OPT_WS_CLOSE_TIMEOUT },
    { "ws-per-message-deflate", required_argument, NULL, OPT_WS_PER_MESSAGE_DEFLATE },
    { "lifespan", required_argument, NULL, OPT_LIFESPAN },
    { "root-path", required_argument, NULL, OPT_ROOT_PATH },
    { "gil-report", required_argument, NULL, OPT_GIL_REPORT },
    { "gil-routes", required_argument, NULL, OPT_GIL_ROUTES },
    { "gil-load", required_argument, NULL, OPT_GIL_LOAD },
    { "gil-monitor", required_argument, NULL, OPT_GIL_MONITOR },
    { "gil-trace", required_argument, NULL, OPT_GIL_TRACE },
    { "gil-sample-hz", required_argument, NULL, OPT_GIL_SAMPLE_HZ },
    { "gil-profile", required_argument, NULL, OPT_GIL_PROFILE },
    { "gil-probe", required_argument, NULL, OPT_GIL_PROBE },
    { "fd", required_argument, NULL, OPT_FD },
    { "unix-mode", required_argument, NULL, OPT_UNIX_MODE },
    { "forwarded-allow-ips", required_argument, NULL, OPT_FORWARDED_ALLOW_IPS },
    { "processes", required_argument, NULL, 'p' },
    { "reuse-port", no_argument, NULL, OPT_REUSE_PORT },
    { "reload", no_argument, NULL, OPT_RELOAD },
    { "max-requests", required_argument, NULL, OPT_MAX_REQUESTS },
    { "max-requests-jitter", required_argument, NULL, OPT_MAX_REQUESTS_JITTER },
    { "timeout", required_argument, NULL, OPT_TIMEOUT },
    { "worker", required_argument, NULL, OPT_WORKER }, /* internal: "SLOT:LISTENERS", set by the master */
    { "version", no_argument, NULL, 'V' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
};

const char *
pt_interface_name(pt_interface_t i)
{
    return i == PT_IFACE_WSGI ? "wsgi" : i == PT_IFACE_ASGI ? "asgi" : i == PT_IFACE_ASGI2 ? "asgi2" : "auto";
}

static int
bad(const char *opt, const char *val, const char *why)
{
    fprintf(stderr, "ponte: error: --%s %s: %s (see ponte --help)\n", opt, val, why);
    return -1;
}

static bool
bind_ok(const char *spec)
{
    char host[256];
    int port;
    bool is_unix;
    struct sockaddr_in6 sa6;
    struct sockaddr_in sa4;

    if (pt_bind_parse(spec, host, sizeof(host), &port, &is_unix) < 0) {
        return false;
    }
    return is_unix || uv_ip4_addr(host, port, &sa4) == 0 || uv_ip6_addr(host, port, &sa6) == 0;
}

static int
parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (*s == '\0' || *s == '-' || *end != '\0' || errno != 0 || v < min || v > max) {
        char why[96];

        snprintf(why, sizeof(why), "expected a whole number from %llu to %llu", (unsigned long long)min,
                 (unsigned long long)max);
        return bad(opt, s, why);
    }
    *out = v;
    return 0;
}

static int
parse_seconds(const char *opt, const char *s, bool zero_ok, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || errno != 0 || !isfinite(v) || v < 0 || (v == 0 && !zero_ok) || v > 86400 * 365) {
        return bad(opt, s,
                   zero_ok ? "expected a number of seconds (0: never)" : "expected a positive number of seconds");
    }
    *out = v;
    return 0;
}

/* Options that set one field from their value (or set a flag), read from a table rather than a case each. */
typedef enum {
    ARG_TRUE,     /* no value: the bool field becomes true */
    ARG_FALSE,    /* no value: the bool field becomes false */
    ARG_COUNT,    /* a whole number from min to max, into an int, size_t or uint64_t field */
    ARG_SECONDS,  /* a positive number of seconds, into a double */
    ARG_SECONDS0, /* the same, or 0 for never */
    ARG_STRING,   /* the value itself */
} pt_arg_kind_t;

#define FIELD(f) offsetof(pt_config_t, f), sizeof(((pt_config_t *)0)->f)
_Static_assert(sizeof(size_t) == sizeof(uint64_t), "ARG_COUNT stores size_t and uint64_t fields alike");

static const struct {
    int opt;
    const char *name;
    pt_arg_kind_t kind;
    size_t off, size;
    uint64_t min, max;
} fields[] = {
    { 't', "threads", ARG_COUNT, FIELD(threads), 0, 1024 },
    { OPT_LOOPS, "loops", ARG_COUNT, FIELD(loops), 1, 64 },
    { OPT_SSL_CERTFILE, "ssl-certfile", ARG_STRING, FIELD(ssl_certfile), 0, 0 },
    { OPT_SSL_KEYFILE, "ssl-keyfile", ARG_STRING, FIELD(ssl_keyfile), 0, 0 },
    { OPT_SSL_KEYFILE_PASSWORD, "ssl-keyfile-password", ARG_STRING, FIELD(ssl_keyfile_password), 0, 0 },
    { OPT_SSL_CA_CERTS, "ssl-ca-certs", ARG_STRING, FIELD(ssl_ca_certs), 0, 0 },
    { OPT_SSL_CIPHERS, "ssl-ciphers", ARG_STRING, FIELD(ssl_ciphers), 0, 0 },
    { 'p', "processes", ARG_COUNT, FIELD(processes), 0, 256 },
    { OPT_RELOAD, "reload", ARG_TRUE, FIELD(reload), 0, 0 },
    { OPT_REUSE_PORT, "reuse-port", ARG_TRUE, FIELD(reuse_port), 0, 0 },
    { OPT_MAX_REQUESTS, "max-requests", ARG_COUNT, FIELD(max_requests), 0, UINT64_MAX / 2 },
    { OPT_MAX_REQUESTS_JITTER, "max-requests-jitter", ARG_COUNT, FIELD(max_requests_jitter), 0, 1 << 30 },
    { OPT_TIMEOUT, "timeout", ARG_SECONDS, FIELD(timeout), 0, 0 },
    { OPT_APP_DIR, "app-dir", ARG_STRING, FIELD(app_dir), 0, 0 },
    { 'H', "virtualenv", ARG_STRING, FIELD(virtualenv), 0, 0 },
    { OPT_ACCESS_LOG, "access-log", ARG_TRUE, FIELD(access_log), 0, 0 },
    { OPT_NO_ACCESS_LOG, "no-access-log", ARG_FALSE, FIELD(access_log), 0, 0 },
    { OPT_ACCESS_LOG_GIL, "access-log-gil", ARG_TRUE, FIELD(access_log_gil), 0, 0 },
    { OPT_MAX_HEADER_SIZE, "max-header-size", ARG_COUNT, FIELD(max_header_size), 256, 1 << 24 },
    { OPT_MAX_HEADERS, "max-headers", ARG_COUNT, FIELD(max_headers), 1, 10000 },
    { OPT_MAX_BODY_SIZE, "max-body-size", ARG_COUNT, FIELD(max_body_size), 0, UINT64_MAX / 2 },
    { OPT_KEEP_ALIVE_TIMEOUT, "keep-alive-timeout", ARG_SECONDS, FIELD(keep_alive_timeout), 0, 0 },
    { OPT_HEADER_TIMEOUT, "header-timeout", ARG_SECONDS, FIELD(header_timeout), 0, 0 },
    { OPT_CLIENT_TIMEOUT, "client-timeout", ARG_SECONDS, FIELD(client_timeout), 0, 0 },
    { OPT_GRACEFUL_TIMEOUT, "graceful-timeout", ARG_SECONDS, FIELD(graceful_timeout), 0, 0 },
    { OPT_BACKLOG, "backlog", ARG_COUNT, FIELD(backlog), 1, 65535 },
    { OPT_MAX_CONNECTIONS, "max-connections", ARG_COUNT, FIELD(max_connections), 0, 1 << 24 },
    { OPT_LIMIT_CONCURRENCY, "limit-concurrency", ARG_COUNT, FIELD(limit_concurrency), 0, 1 << 24 },
    { OPT_MIN_BODY_RATE, "min-body-rate", ARG_COUNT, FIELD(min_body_rate), 0, 1 << 30 },
    { OPT_GIL_TRACE, "gil-trace", ARG_STRING, FIELD(gil_trace), 0, 0 },
    { OPT_GIL_REPORT, "gil-report", ARG_SECONDS, FIELD(gil_report), 0, 0 },
    { OPT_GIL_ROUTES, "gil-routes", ARG_COUNT, FIELD(gil_routes), 0, 256 },
    { OPT_GIL_SAMPLE_HZ, "gil-sample-hz", ARG_COUNT, FIELD(gil_sample_hz), 0, 1000 },
    { OPT_GIL_PROFILE, "gil-profile", ARG_STRING, FIELD(gil_profile), 0, 0 },
    { OPT_WS_MAX_SIZE, "ws-max-size", ARG_COUNT, FIELD(ws_max_size), 1, 1u << 30 },
    { OPT_WS_PING_INTERVAL, "ws-ping-interval", ARG_SECONDS0, FIELD(ws_ping_interval), 0, 0 },
    { OPT_WS_PING_TIMEOUT, "ws-ping-timeout", ARG_SECONDS0, FIELD(ws_ping_timeout), 0, 0 },
    { OPT_WS_CLOSE_TIMEOUT, "ws-close-timeout", ARG_SECONDS, FIELD(ws_close_timeout), 0, 0 },
};

/* Sets a table field from its option's value. 0, or -1 after printing why. */
static int
set_field(pt_config_t *cfg, size_t k, const char *arg)
{
    char *at = (char *)cfg + fields[k].off;
    uint64_t v;

    switch (fields[k].kind) {
    case ARG_TRUE:
    case ARG_FALSE: *(bool *)at = fields[k].kind == ARG_TRUE; return 0;
    case ARG_SECONDS:
    case ARG_SECONDS0: return parse_seconds(fields[k].name, arg, fields[k].kind == ARG_SECONDS0, (double *)at);
    case ARG_STRING: *(const char **)at = arg; return 0;
    case ARG_COUNT: break;
    }
    if (parse_u64(fields[k].name, arg, fields[k].min, fields[k].max, &v) < 0) {
        return -1;
    }
    if (fields[k].size == sizeof(int)) {
        *(int *)at = (int)v;
    } else {
        memcpy(at, &v, sizeof(v)); /* size_t and uint64_t: both 64-bit here */
    }
    return 0;
}

/* One of a few named values: its index, or -1 after printing why. */
static int
choose(const char *opt, const char *arg, const char *const *names, int n, const char *expected)
{
    int i;

    for (i = 0; i < n; i++) {
        if (strcmp(arg, names[i]) == 0) {
            return i;
        }
    }
    return bad(opt, arg, expected);
}

static int
add_fd(pt_config_t *cfg, const char *arg)
{
    struct stat st;
    uint64_t v;

    if (parse_u64("fd", arg, 0, 65535, &v) < 0) {
        return -1;
    }
    if (cfg->worker_slot) {
        return 0; /* a worker has the master's copy of every socket at 3.. (--worker comes first) */
    }
    if (cfg->nfds == PT_MAX_BINDS) {
        return bad("fd", arg, "too many sockets");
    }
    if (fstat((int)v, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        return bad("fd", arg, "not an open socket");
    }
    cfg->fds[cfg->nfds++] = (int)v;
    return 0;
}

/* --worker SLOT:N, internal: the master passes the N listening sockets at fds 3.., then the control line. */
static int
set_worker(pt_config_t *cfg, const char *arg)
{
    int slot, nl, i;

    if (sscanf(arg, "%d:%d", &slot, &nl) != 2 || slot < 1 || nl < 1 || nl > PT_MAX_BINDS) {
        return bad("worker", arg, "internal option, set by the master");
    }
    cfg->worker_slot = slot;
    for (i = 0; i < nl; i++) {
        cfg->fds[i] = 3 + i;
    }
    cfg->nfds = nl;
    cfg->control_fd = 3 + nl;
    return 0;
}

static int
set_unix_mode(pt_config_t *cfg, const char *arg)
{
    char *end;
    long mode = strtol(arg, &end, 8);

    if (*arg == '\0' || *end != '\0' || mode < 0 || mode > 0777) {
        return bad("unix-mode", arg, "expected an octal mode such as 660");
    }
    cfg->unix_mode = (int)mode;
    return 0;
}

static int
set_root_path(pt_config_t *cfg, const char *arg)
{
    size_t n = strlen(arg);

    if (n > 0 && (arg[0] != '/' || arg[n - 1] == '/')) {
        return bad("root-path", arg, "expected a path like /api (a leading '/', no trailing '/')");
    }
    cfg->root_path = arg;
    return 0;
}

/* --bind [https://|http://]ADDR: the prefix says whether the socket serves TLS (with --ssl-certfile, one without a
 * prefix does). */
static int
add_bind(pt_config_t *cfg, const char *arg)
{
    signed char scheme = strncmp(arg, "https://", 8) == 0 ? 1 : strncmp(arg, "http://", 7) == 0 ? 0 : -1;
    const char *addr = scheme == 1 ? arg + 8 : scheme == 0 ? arg + 7 : arg;

    if (cfg->nbinds == PT_MAX_BINDS) {
        return bad("bind", arg, "too many addresses");
    }
    if (!bind_ok(addr)) {
        return bad("bind", arg,
                   "expected HOST:PORT, [IPv6]:PORT or unix:/path with a numeric address, after https:// or "
                   "http:// if one is given");
    }
    cfg->bind_scheme[cfg->nbinds] = scheme;
    cfg->binds[cfg->nbinds++] = addr;
    return 0;
}

/* --gil-load IO,CPU[,SHARED]: the page's load buttons' paths. */
static int
parse_gil_load(pt_config_t *cfg, const char *arg)
{
    const char *comma = strchr(arg, ','), *third = comma ? strchr(comma + 1, ',') : NULL;
    size_t cpu_len = third ? (size_t)(third - comma - 1) : comma ? strlen(comma + 1) : 0;

    if (comma == NULL || arg[0] != '/' || comma[1] != '/' || (third && (third[1] != '/' || strchr(third + 1, ',')))
        || (size_t)(comma - arg) >= sizeof(cfg->gil_load_io) || cpu_len >= sizeof(cfg->gil_load_cpu)
        || (third && strlen(third + 1) >= sizeof(cfg->gil_load_shared))) {
        return bad("gil-load", arg,
                   "expected IO_PATH,CPU_PATH[,SHARED_PATH], e.g. '/io?delay=0.01,/cpu?n=20000,/shared?n=20000'");
    }
    memcpy(cfg->gil_load_io, arg, (size_t)(comma - arg));
    cfg->gil_load_io[comma - arg] = '\0';
    memcpy(cfg->gil_load_cpu, comma + 1, cpu_len);
    cfg->gil_load_cpu[cpu_len] = '\0';
    if (third) {
        strcpy(cfg->gil_load_shared, third + 1);
    }
    return 0;
}

/* The options that are not a plain field. 0, 1 when --help/--version was printed, -1 after printing why.
 * Long because it is one switch with a case per option, each a few lines. */
static int
parse_special(pt_config_t *cfg, int opt, const char *arg, char **argv)
{
    static const char *const interfaces[] = { "auto", "wsgi", "asgi", "asgi2" };
    static const char *const lifespans[] = { "auto", "on", "off" };
    static const char *const https[] = { "auto", "1", "2" };
    static const char *const levels[] = { "debug", "info", "warning", "error", "critical" };
    static const char *const onoff[] = { "off", "on" };
    static const char *const ws_modes[] = { "off", "on", "none", "auto" };
    static const char *const interpreters[] = { "auto", "host", "embedded" };
    static const char *const cert_reqs[] = { "none", "optional", "required", "0", "1", "2" };
    static const char *const tls_versions[] = { "1.2", "1.3" };
    char why[160];
    int i;

    switch (opt) {
    case 'b': return add_bind(cfg, arg);
    case OPT_FD: return add_fd(cfg, arg);
    case OPT_WORKER: return set_worker(cfg, arg);
    case OPT_UNIX_MODE: return set_unix_mode(cfg, arg);
    case OPT_ROOT_PATH: return set_root_path(cfg, arg);
    case OPT_FORWARDED_ALLOW_IPS:
        return pt_trust_parse(arg, &cfg->forwarded_allow, why, sizeof(why)) < 0 ? bad("forwarded-allow-ips", arg, why)
                                                                                : 0;
    case 'i':
        i = choose("interface", arg, interfaces, 4, "expected auto, wsgi, asgi or asgi2");
        cfg->interface = i >= 0 ? (pt_interface_t)i : cfg->interface;
        return i < 0 ? -1 : 0;
    case OPT_INTERPRETER:
        i = choose("interpreter", arg, interpreters, 3, "expected auto, host or embedded");
        cfg->interpreter = i >= 0 ? (pt_interpreter_t)i : cfg->interpreter;
        return i < 0 ? -1 : 0;
    case OPT_HTTP:
        i = choose("http", arg, https, 3, "expected auto, 1 or 2");
        cfg->http = i >= 0 ? (pt_http_mode_t)i : cfg->http;
        return i < 0 ? -1 : 0;
    case OPT_LIFESPAN:
        i = choose("lifespan", arg, lifespans, 3, "expected auto, on or off");
        cfg->lifespan = i >= 0 ? (pt_lifespan_t)i : cfg->lifespan;
        return i < 0 ? -1 : 0;
    case OPT_LOG_LEVEL:
        i = choose("log-level", arg, levels, 5, "expected debug, info, warning, error or critical");
        cfg->log_level = i >= 0 ? (pt_log_level_t)i : cfg->log_level;
        return i < 0 ? -1 : 0;
    case OPT_GIL_PROBE:
        i = choose("gil-probe", arg, onoff, 2, "expected on or off");
        cfg->gil_probe = i == 1;
        return i < 0 ? -1 : 0;
    case OPT_REQUEST_BUFFERING:
        i = choose("request-buffering", arg, onoff, 2, "expected on or off");
        cfg->request_buffering = i == 1;
        return i < 0 ? -1 : 0;
    case OPT_WS:
        i = choose("ws", arg, ws_modes, 4, "expected on, auto, off or none");
        cfg->ws = i == 1 || i == 3;
        return i < 0 ? -1 : 0;
    case OPT_WS_PER_MESSAGE_DEFLATE:
        i = choose("ws-per-message-deflate", arg, onoff, 2, "expected on or off");
        cfg->ws_per_message_deflate = i == 1;
        return i < 0 ? -1 : 0;
    case OPT_GIL_MONITOR:
        if (!bind_ok(arg)) {
            return bad("gil-monitor", arg, "expected HOST:PORT, [IPv6]:PORT or unix:/path");
        }
        cfg->gil_monitor = arg;
        return 0;
    case OPT_GIL_LOAD: return parse_gil_load(cfg, arg);
    case OPT_SSL_CERT_REQS:
        /* uvicorn takes Python's ssl.CERT_* numbers; the names say the same */
        i = choose("ssl-cert-reqs", arg, cert_reqs, 6, "expected none, optional or required (or 0, 1, 2)");
        cfg->ssl_cert_reqs = i >= 0 ? i % 3 : cfg->ssl_cert_reqs;
        return i < 0 ? -1 : 0;
    case OPT_SSL_MIN_VERSION:
        i = choose("ssl-min-version", arg, tls_versions, 2, "expected 1.2 or 1.3");
        cfg->ssl_min_version = i == 1 ? 13 : 12;
        return i < 0 ? -1 : 0;
    case 'V':
        printf("ponte %s, %s, libuv %s, llhttp %d.%d.%d\n", PT_VERSION, pt_app_runtime_version(), uv_version_string(),
               LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH);
        return 1;
    case 'h': fputs(usage, stdout); return 1;
    case ':': fprintf(stderr, "ponte: error: %s needs a value (see ponte --help)\n", argv[optind - 1]); return -1;
    default: fprintf(stderr, "ponte: error: unknown option %s (see ponte --help)\n", argv[optind - 1]); return -1;
    }
}

static void
set_defaults(pt_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->interface = PT_IFACE_AUTO;
    cfg->threads = 8;
    cfg->loops = 1;
    cfg->app_dir = ".";
    cfg->root_path = "";
    cfg->gil_probe = true;
    cfg->access_log = true;
    cfg->log_level = PT_LOG_INFO;
    cfg->max_header_size = 32768;
    cfg->max_headers = 100;
    cfg->max_body_size = 100 * 1024 * 1024;
    cfg->keep_alive_timeout = 5;
    cfg->header_timeout = 10;
    cfg->client_timeout = 60;
    cfg->graceful_timeout = 30;
    cfg->backlog = 1024;
    cfg->unix_mode = -1;
    cfg->request_buffering = true;
    cfg->min_body_rate = 240;
    cfg->python_executable = PT_PYTHON_EXECUTABLE;
    cfg->ws = true;
    cfg->ws_max_size = 16 * 1024 * 1024;
    cfg->gil_routes = 20;
    cfg->gil_sample_hz = 100;
    cfg->ws_ping_interval = 20;
    cfg->ws_ping_timeout = 20;
    cfg->ws_close_timeout = 10;
    cfg->ws_per_message_deflate = true;
    cfg->ssl_min_version = 12;
    memset(cfg->bind_scheme, -1, sizeof(cfg->bind_scheme));
}

/* Which sockets serve TLS: binds then --fd's, in the order a worker finds the master's sockets. 0, or -1 after
 * printing why. */
static int
check_tls(pt_config_t *cfg)
{
    int i;

    for (i = 0; i < cfg->nbinds; i++) {
        if (cfg->bind_scheme[i] == 1 && cfg->ssl_certfile == NULL) {
            fprintf(stderr, "ponte: error: --bind https://%s needs --ssl-certfile (and --ssl-keyfile)\n",
                    cfg->binds[i]);
            return -1;
        }
        cfg->listen_tls[i] = cfg->ssl_certfile != NULL && cfg->bind_scheme[i] != 0;
    }
    for (; i < 2 * PT_MAX_BINDS; i++) {
        cfg->listen_tls[i] = cfg->ssl_certfile != NULL; /* an --fd, or (a worker) the master's socket of one */
    }
    if (cfg->ssl_certfile == NULL
        && (cfg->ssl_keyfile || cfg->ssl_keyfile_password || cfg->ssl_ca_certs || cfg->ssl_ciphers
            || cfg->ssl_cert_reqs)) {
        fprintf(stderr, "ponte: error: the --ssl-* options need --ssl-certfile\n");
        return -1;
    }
    return 0;
}

/* What the options mean together. 0, or -1 after printing why. */
static int
check_combination(pt_config_t *cfg)
{
    static const char *default_bind = "127.0.0.1:8000";

    if (cfg->reload && cfg->processes == 0 && !cfg->worker_slot) {
        cfg->processes = 1;
    }
    if ((cfg->max_requests || cfg->timeout > 0 || cfg->reuse_port) && cfg->processes == 0 && !cfg->worker_slot) {
        fprintf(stderr,
                "ponte: error: --max-requests, --timeout and --reuse-port need --processes (a master to "
                "replace the worker)\n");
        return -1;
    }
    if (cfg->timeout > 0 && cfg->loops > 1) {
        /* A worker's beat and its stuck-request check see the first loop only. */
        fprintf(stderr, "ponte: error: --timeout watches one loop per worker: it cannot be used with --loops\n");
        return -1;
    }
    if (check_tls(cfg) < 0) {
        return -1;
    }
    if (cfg->worker_slot) {
        cfg->nbinds = 0; /* a worker accepts on the master's sockets */
        cfg->processes = 0;
    } else if (cfg->nbinds == 0 && cfg->nfds == 0) {
        cfg->binds[cfg->nbinds++] = default_bind;
    }
    if (cfg->reuse_port && cfg->nfds > 0 && !cfg->worker_slot) {
        fprintf(stderr, "ponte: error: --reuse-port makes its own sockets; it cannot share an --fd\n");
        return -1;
    }
    return 0;
}

int
pt_config_parse(pt_config_t *cfg, int argc, char **argv)
{
    int opt, r;
    size_t k;

    set_defaults(cfg);
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":b:i:t:p:H:Vh", options, NULL)) != -1) {
        for (k = 0; k < sizeof(fields) / sizeof(fields[0]) && fields[k].opt != opt; k++) {
        }
        r = k < sizeof(fields) / sizeof(fields[0]) ? set_field(cfg, k, optarg) : parse_special(cfg, opt, optarg, argv);
        if (r != 0) {
            return r;
        }
    }
    if (!cfg->gil_probe
        && (cfg->gil_monitor || cfg->gil_trace || cfg->gil_report > 0 || cfg->access_log_gil || cfg->gil_profile)) {
        fprintf(stderr,
                "ponte: error: --gil-probe off leaves --gil-monitor, --gil-trace, --gil-report, --gil-profile and "
                "--access-log-gil nothing to show\n");
        return -1;
    }
    if (cfg->gil_profile && cfg->gil_sample_hz == 0) {
        fprintf(stderr, "ponte: error: --gil-profile writes the sampler's stacks: it needs --gil-sample-hz above 0\n");
        return -1;
    }
    if (cfg->gil_load_io[0] && !cfg->gil_monitor) {
        fprintf(stderr, "ponte: error: --gil-load starts load from the GIL page: it needs --gil-monitor\n");
        return -1;
    }
    if (optind != argc - 1) {
        fprintf(stderr,
                optind >= argc ? "ponte: error: no APP given (see ponte --help)\n"
                               : "ponte: error: expected one APP, got extra arguments (see ponte --help)\n");
        return -1;
    }
    cfg->app = argv[optind];
    return check_combination(cfg);
}
