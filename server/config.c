#include "config.h"
#include "listen.h"

#include <errno.h>
#include <getopt.h>
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
    "Serve a Python WSGI (or ASGI) application over HTTP/1.1.\n"
    "APP is package.module:callable or path/to/file.py:callable (callable defaults to 'application', then 'app').\n"
    "\n"
    "options:\n"
    "  -b, --bind ADDR            listen on HOST:PORT, [IPv6]:PORT or unix:/path; repeatable\n"
    "                             (default 127.0.0.1:8000; port 0 picks a free port)\n"
    "  -i, --interface KIND       auto, wsgi, asgi or asgi2 (default auto: a coroutine function is ASGI)\n"
    "      --root-path PATH       the path the app is mounted at (ASGI root_path, WSGI SCRIPT_NAME; default none)\n"
    "      --lifespan MODE        ASGI lifespan events: auto, on or off (default auto: used if the app answers)\n"
    "  -t, --threads N            WSGI worker threads; 0 runs the app on the event-loop thread (default 8)\n"
    "      --app-dir DIR          put DIR first on sys.path (default .)\n"
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
    "      --unix-mode MODE       permissions of a unix:/path socket, in octal, e.g. 660 (default: from the umask)\n"
    "      --forwarded-allow-ips LIST  trust X-Forwarded-For, X-Forwarded-Proto and Forwarded from these\n"
    "                             proxies: addresses, networks (10.0.0.0/8), unix, or * (default: none)\n"
    "      --fd N                 accept on the inherited listening socket N (systemd socket activation); repeatable\n"
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
    "                             (open it in Perfetto or chrome://tracing)\n"
    "      --gil-probe on|off     measure every GIL move (default on; off exists to measure what that costs)\n"
    "      --gil-report S         every S seconds, the GIL: busy %, waiters, switches/s, forced switches/s and hold/wait %\n"
    "                             per thread; a live table when stderr is a terminal, a log line otherwise (default off)\n"
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
    OPT_GIL_MONITOR,
    OPT_GIL_TRACE,
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
};

static const struct option options[] = {
    { "bind", required_argument, NULL, 'b' },
    { "interface", required_argument, NULL, 'i' },
    { "threads", required_argument, NULL, 't' },
    { "app-dir", required_argument, NULL, OPT_APP_DIR },
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
    { "lifespan", required_argument, NULL, OPT_LIFESPAN },
    { "root-path", required_argument, NULL, OPT_ROOT_PATH },
    { "gil-report", required_argument, NULL, OPT_GIL_REPORT },
    { "gil-monitor", required_argument, NULL, OPT_GIL_MONITOR },
    { "gil-trace", required_argument, NULL, OPT_GIL_TRACE },
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
    { "worker", required_argument, NULL, OPT_WORKER },     /* internal: "SLOT:LISTENERS", set by the master */
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
parse_seconds(const char *opt, const char *s, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || errno != 0 || !isfinite(v) || v <= 0 || v > 86400 * 365) {
        return bad(opt, s, "expected a positive number of seconds");
    }
    *out = v;
    return 0;
}

int
pt_config_parse(pt_config_t *cfg, int argc, char **argv)
{
    static const char *default_bind = "127.0.0.1:8000";
    uint64_t v;
    int opt;

    memset(cfg, 0, sizeof(*cfg));
    cfg->interface = PT_IFACE_AUTO;
    cfg->threads = 8;
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

    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":b:i:t:p:Vh", options, NULL)) != -1) {
        switch (opt) {
        case 'b':
            if (cfg->nbinds == PT_MAX_BINDS) {
                return bad("bind", optarg, "too many addresses");
            }
            if (!bind_ok(optarg)) {
                return bad("bind", optarg, "expected HOST:PORT, [IPv6]:PORT or unix:/path with a numeric address");
            }
            cfg->binds[cfg->nbinds++] = optarg;
            break;
        case 'i':
            if (strcmp(optarg, "auto") == 0) {
                cfg->interface = PT_IFACE_AUTO;
            } else if (strcmp(optarg, "wsgi") == 0) {
                cfg->interface = PT_IFACE_WSGI;
            } else if (strcmp(optarg, "asgi") == 0) {
                cfg->interface = PT_IFACE_ASGI;
            } else if (strcmp(optarg, "asgi2") == 0) {
                cfg->interface = PT_IFACE_ASGI2;
            } else {
                return bad("interface", optarg, "expected auto, wsgi, asgi or asgi2");
            }
            break;
        case 't':
            if (parse_u64("threads", optarg, 0, 1024, &v) < 0) {
                return -1;
            }
            cfg->threads = (int)v;
            break;
        case 'p':
            if (parse_u64("processes", optarg, 0, 256, &v) < 0) {
                return -1;
            }
            cfg->processes = (int)v;
            break;
        case OPT_FD: {
            struct stat st;

            if (parse_u64("fd", optarg, 0, 65535, &v) < 0) {
                return -1;
            }
            if (cfg->worker_slot) {
                break;          /* a worker has the master's copy of every socket at 3.. (--worker comes first) */
            }
            if (cfg->nfds == PT_MAX_BINDS) {
                return bad("fd", optarg, "too many sockets");
            }
            if (fstat((int)v, &st) < 0 || !S_ISSOCK(st.st_mode)) {
                return bad("fd", optarg, "not an open socket");
            }
            cfg->fds[cfg->nfds++] = (int)v;
            break;
        }
        case OPT_FORWARDED_ALLOW_IPS: {
            char why[160];

            if (pt_trust_parse(optarg, &cfg->forwarded_allow, why, sizeof(why)) < 0) {
                return bad("forwarded-allow-ips", optarg, why);
            }
            break;
        }
        case OPT_UNIX_MODE: {
            char *end;
            long mode = strtol(optarg, &end, 8);

            if (*optarg == '\0' || *end != '\0' || mode < 0 || mode > 0777) {
                return bad("unix-mode", optarg, "expected an octal mode such as 660");
            }
            cfg->unix_mode = (int)mode;
            break;
        }
        case OPT_RELOAD:
            cfg->reload = true;
            break;
        case OPT_REUSE_PORT:
            cfg->reuse_port = true;
            break;
        case OPT_MAX_REQUESTS:
            if (parse_u64("max-requests", optarg, 0, UINT64_MAX / 2, &cfg->max_requests) < 0) {
                return -1;
            }
            break;
        case OPT_MAX_REQUESTS_JITTER:
            if (parse_u64("max-requests-jitter", optarg, 0, 1 << 30, &cfg->max_requests_jitter) < 0) {
                return -1;
            }
            break;
        case OPT_TIMEOUT:
            if (parse_seconds("timeout", optarg, &cfg->timeout) < 0) {
                return -1;
            }
            break;
        case OPT_WORKER: {
            int slot, nl, i;

            if (sscanf(optarg, "%d:%d", &slot, &nl) != 2 || slot < 1 || nl < 1 || nl > PT_MAX_BINDS) {
                return bad("worker", optarg, "internal option, set by the master");
            }
            cfg->worker_slot = slot;
            for (i = 0; i < nl; i++) {
                cfg->fds[i] = 3 + i;    /* the master passes the listening sockets first, then the control line */
            }
            cfg->nfds = nl;
            cfg->control_fd = 3 + nl;
            break;
        }
        case OPT_APP_DIR:
            cfg->app_dir = optarg;
            break;
        case OPT_ACCESS_LOG:
            cfg->access_log = true;
            break;
        case OPT_NO_ACCESS_LOG:
            cfg->access_log = false;
            break;
        case OPT_ACCESS_LOG_GIL:
            cfg->access_log_gil = true;
            break;
        case OPT_LOG_LEVEL: {
            static const char *const names[] = { "debug", "info", "warning", "error", "critical" };
            int i;

            for (i = 0; i < 5; i++) {
                if (strcmp(optarg, names[i]) == 0) {
                    cfg->log_level = (pt_log_level_t)i;
                    break;
                }
            }
            if (i == 5) {
                return bad("log-level", optarg, "expected debug, info, warning, error or critical");
            }
            break;
        }
        case OPT_MAX_HEADER_SIZE:
            if (parse_u64("max-header-size", optarg, 256, 1 << 24, &v) < 0) {
                return -1;
            }
            cfg->max_header_size = (size_t)v;
            break;
        case OPT_MAX_HEADERS:
            if (parse_u64("max-headers", optarg, 1, 10000, &v) < 0) {
                return -1;
            }
            cfg->max_headers = (size_t)v;
            break;
        case OPT_MAX_BODY_SIZE:
            if (parse_u64("max-body-size", optarg, 0, UINT64_MAX / 2, &v) < 0) {
                return -1;
            }
            cfg->max_body_size = v;
            break;
        case OPT_KEEP_ALIVE_TIMEOUT:
            if (parse_seconds("keep-alive-timeout", optarg, &cfg->keep_alive_timeout) < 0) {
                return -1;
            }
            break;
        case OPT_HEADER_TIMEOUT:
            if (parse_seconds("header-timeout", optarg, &cfg->header_timeout) < 0) {
                return -1;
            }
            break;
        case OPT_CLIENT_TIMEOUT:
            if (parse_seconds("client-timeout", optarg, &cfg->client_timeout) < 0) {
                return -1;
            }
            break;
        case OPT_GRACEFUL_TIMEOUT:
            if (parse_seconds("graceful-timeout", optarg, &cfg->graceful_timeout) < 0) {
                return -1;
            }
            break;
        case OPT_GIL_PROBE:
            if (strcmp(optarg, "on") == 0 || strcmp(optarg, "off") == 0) {
                cfg->gil_probe = optarg[1] == 'n';
            } else {
                return bad("gil-probe", optarg, "expected on or off");
            }
            break;
        case OPT_GIL_TRACE:
            cfg->gil_trace = optarg;
            break;
        case OPT_GIL_MONITOR:
            if (!bind_ok(optarg)) {
                return bad("gil-monitor", optarg, "expected HOST:PORT, [IPv6]:PORT or unix:/path");
            }
            cfg->gil_monitor = optarg;
            break;
        case OPT_GIL_REPORT:
            if (parse_seconds("gil-report", optarg, &cfg->gil_report) < 0) {
                return -1;
            }
            break;
        case OPT_ROOT_PATH: {
            size_t n = strlen(optarg);

            if (n > 0 && (optarg[0] != '/' || optarg[n - 1] == '/')) {
                return bad("root-path", optarg, "expected a path like /api (a leading '/', no trailing '/')");
            }
            cfg->root_path = optarg;
            break;
        }
        case OPT_LIFESPAN:
            if (strcmp(optarg, "auto") == 0) {
                cfg->lifespan = PT_LIFESPAN_AUTO;
            } else if (strcmp(optarg, "on") == 0) {
                cfg->lifespan = PT_LIFESPAN_ON;
            } else if (strcmp(optarg, "off") == 0) {
                cfg->lifespan = PT_LIFESPAN_OFF;
            } else {
                return bad("lifespan", optarg, "expected auto, on or off");
            }
            break;
        case OPT_BACKLOG:
            if (parse_u64("backlog", optarg, 1, 65535, &v) < 0) {
                return -1;
            }
            cfg->backlog = (int)v;
            break;
        case 'V':
            printf("ponte %s (%s, libuv %s)\n", PT_VERSION, pt_app_runtime_version(), uv_version_string());
            return 1;
        case 'h':
            fputs(usage, stdout);
            return 1;
        case ':':
            fprintf(stderr, "ponte: error: %s needs a value (see ponte --help)\n", argv[optind - 1]);
            return -1;
        default:
            fprintf(stderr, "ponte: error: unknown option %s (see ponte --help)\n", argv[optind - 1]);
            return -1;
        }
    }
    if (!cfg->gil_probe && (cfg->gil_monitor || cfg->gil_trace || cfg->gil_report > 0 || cfg->access_log_gil)) {
        fprintf(stderr, "ponte: error: --gil-probe off leaves --gil-monitor, --gil-trace, --gil-report and "
                        "--access-log-gil nothing to show\n");
        return -1;
    }
    if (optind != argc - 1) {
        fprintf(stderr, optind >= argc ? "ponte: error: no APP given (see ponte --help)\n"
                                       : "ponte: error: expected one APP, got extra arguments (see ponte --help)\n");
        return -1;
    }
    cfg->app = argv[optind];
    if (cfg->reload && cfg->processes == 0 && !cfg->worker_slot) {
        cfg->processes = 1;
    }
    if ((cfg->max_requests || cfg->timeout > 0 || cfg->reuse_port) && cfg->processes == 0 && !cfg->worker_slot) {
        fprintf(stderr, "ponte: error: --max-requests, --timeout and --reuse-port need --processes (a master to "
                        "replace the worker)\n");
        return -1;
    }
    if (cfg->worker_slot) {
        cfg->nbinds = 0;        /* a worker accepts on the master's sockets */
        cfg->processes = 0;
    } else if (cfg->nbinds == 0 && cfg->nfds == 0) {
        cfg->binds[cfg->nbinds++] = default_bind;
    }
    if (cfg->reuse_port && cfg->nfds > 0 && !cfg->worker_slot) {
        fprintf(stderr, "ponte: error: --reuse-port makes its own sockets; it cannot share an --fd\n");
        return -1;
    }
    cfg->python_executable = PT_PYTHON_EXECUTABLE;
    return 0;
}
