#include "listen.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"

int
pt_bind_parse(const char *spec, char *host, size_t hostlen, int *port, bool *is_unix)
{
    const char *colon;
    char *end;
    long p;
    size_t hl;

    *is_unix = false;
    *port = 0;
    if (strncmp(spec, "unix:", 5) == 0) {
        if (spec[5] == '\0' || strlen(spec + 5) >= hostlen) {
            return -EINVAL;
        }
        strcpy(host, spec + 5);
        *is_unix = true;
        return 0;
    }
    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');

        if (close == NULL || close[1] != ':') {
            return -EINVAL;
        }
        hl = (size_t)(close - spec - 1);
        colon = close + 1;
        spec++;
    } else {
        colon = strrchr(spec, ':');
        if (colon == NULL) {
            return -EINVAL;
        }
        hl = (size_t)(colon - spec);
    }
    if (hl == 0 || hl >= hostlen) {
        return -EINVAL;
    }
    memcpy(host, spec, hl);
    host[hl] = '\0';
    errno = 0;
    p = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno != 0 || p < 0 || p > 65535) {
        return -EINVAL;
    }
    *port = (int)p;
    return 0;
}

/*
 * Accepting pauses when the process runs out of descriptors, or has --max-connections open, and resumes when
 * connections close: the next clients wait in the kernel's backlog meanwhile. Pausing closes the listening
 * handle; the socket itself stays open through a spare descriptor taken at start-up. (Left alone, libuv answers
 * EMFILE by accepting each new connection and closing it at once, a reset for every client, and a log line per
 * attempt here.)
 */
static void on_connection(uv_stream_t *server, int status);

static void
on_pause_close(uv_handle_t *h)
{
    pt_listener_t *ls = h->data;

    ls->reopenable = true;
}

static void
on_pause_timer(uv_timer_t *t)
{
    pt_listen_resume(t->data);
}

static void
listen_pause(pt_server_t *srv, const char *why)
{
    int i, paused = 0;

    for (i = 0; i < srv->nlisteners; i++) {
        pt_listener_t *ls = &srv->listeners[i];

        if (!ls->paused && ls->spare_fd >= 0 && !uv_is_closing(&ls->h.handle)) {
            ls->paused = true;
            ls->reopenable = false;
            ls->held = false; /* the close closes the connection libuv held for it */
            uv_close(&ls->h.handle, on_pause_close);
            paused++;
        }
    }
    if (paused > 0 && !srv->accept_paused) {
        uint64_t now = uv_now(srv->loop);

        srv->accept_paused = true;
        srv->pauses++;
        /* At the limit, every connection that closes lets one in, and pauses again: say so every 10 s at most. */
        if (srv->pause_logged == 0 || now - srv->pause_logged >= 10000) {
            pt_log_warning("not accepting for now: %s (%zu connections open); new clients wait in the backlog%s", why,
                           srv->nconns, srv->pauses > 1 ? " (and paused again since the last line)" : "");
            srv->pause_logged = now;
            srv->pauses = 0;
        }
        uv_timer_start(&srv->accept_timer, on_pause_timer, 1000, 1000);
    }
}

/* Opens a paused listener again from its spare descriptor. 0, or a negative error (still out of descriptors). */
static int
listen_reopen(pt_listener_t *ls)
{
    int spare = fcntl(ls->spare_fd, F_DUPFD_CLOEXEC, 0);
    pt_server_t *srv = ls->srv;
    int r;

    if (spare < 0) {
        return -errno;
    }
    r = ls->is_unix ? uv_pipe_init(srv->loop, &ls->h.pipe, 0) : uv_tcp_init(srv->loop, &ls->h.tcp);
    if (r == 0) {
        ls->h.handle.data = ls;
        r = ls->is_unix ? uv_pipe_open(&ls->h.pipe, ls->spare_fd) : uv_tcp_open(&ls->h.tcp, ls->spare_fd);
        if (r == 0) {
            ls->spare_fd = spare; /* the handle owns the old one now */
            r = uv_listen(&ls->h.stream, srv->cfg->backlog, on_connection);
        }
        if (r < 0) {
            pt_log_error("cannot accept on %s again: %s", ls->url, uv_strerror(r));
        }
    } else {
        close(spare);
    }
    ls->paused = r < 0;
    return r;
}

/* Descriptors open in this process now. */
static int
open_descriptors(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (d == NULL) {
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        n += e->d_name[0] != '.';
    }
    closedir(d);
    return n - 1; /* the directory's own */
}

/*
 * How many connections the descriptor limit (ulimit -n) leaves room for: what is not open once the server has
 * started, less a reserve for what the app and the server open later (a spooled body, a log file, a database
 * connection). Past it, accepting pauses before accept() fails.
 */
static size_t
descriptor_budget(void)
{
    struct rlimit rl;
    int open_now = open_descriptors();
    rlim_t reserve;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY || open_now < 0) {
        return SIZE_MAX;
    }
    reserve = rl.rlim_cur / 8 < 64 ? rl.rlim_cur / 8 : 64;
    if (rl.rlim_cur <= (rlim_t)open_now + reserve) {
        return 1;
    }
    return (size_t)(rl.rlim_cur - (rlim_t)open_now - reserve);
}

/* The connections accepting may hold open: --max-connections, and what the descriptors allow. */
static size_t
connection_room(const pt_server_t *srv, const char **why)
{
    size_t max = srv->cfg->max_connections > 0 ? srv->cfg->max_connections : SIZE_MAX;

    *why = "--max-connections reached";
    if (srv->conn_budget < max) {
        *why = "near the limit of file descriptors (ulimit -n)";
        return srv->conn_budget;
    }
    return max;
}

void
pt_listen_resume(pt_server_t *srv)
{
    const char *why;
    int i, still = 0;

    if (!srv->accept_paused || srv->stopping
        || atomic_load_explicit(&srv->totals->nconns, memory_order_relaxed) >= connection_room(srv, &why)) {
        return;
    }
    for (i = 0; i < srv->nlisteners; i++) {
        pt_listener_t *ls = &srv->listeners[i];

        if (ls->paused && (!ls->reopenable || listen_reopen(ls) < 0)) {
            still++;
        }
    }
    if (still == 0) {
        srv->accept_paused = false;
        uv_timer_stop(&srv->accept_timer);
        if (srv->pauses == 0) {
            pt_log_info("accepting again (%zu connections open)", srv->nconns); /* after a logged pause */
        }
    }
}

/* Takes the connection libuv has accepted on ls. */
static void
accept_one(pt_server_t *srv, pt_listener_t *ls)
{
    const char *why;
    pt_conn_t *c = pt_conn_new(srv);
    int r;

    if (c == NULL) {
        pt_log_error("accept on %s: out of memory", ls->url);
        return;
    }
    r = ls->is_unix ? uv_pipe_init(srv->loop, &c->h.pipe, 0) : uv_tcp_init(srv->loop, &c->h.tcp);
    if (r < 0) {
        pt_log_error("accept on %s: %s", ls->url, uv_strerror(r));
        pt_conn_discard(c, false);
        return;
    }
    r = uv_accept(&ls->h.stream, &c->h.stream);
    if (r < 0) {
        pt_log_error("accept on %s: %s", ls->url, uv_strerror(r));
        pt_conn_discard(c, true);
        return;
    }
    pt_conn_start(srv, ls, c);
    if (atomic_load_explicit(&srv->totals->nconns, memory_order_relaxed) >= connection_room(srv, &why)) {
        listen_pause(srv, why);
    }
}

/*
 * --loops: whether this loop has more than its share of the process's connections. Every loop watches the same
 * sockets, and libuv accepts until the backlog is empty: the first loop to wake would take a whole burst of
 * connections (wrk's, at its start) and keep them, while the others idle. A loop above its share leaves the next
 * connection in libuv (which then stops watching the socket until it is taken), so that the other loops, woken by
 * the same readiness, take the rest; it takes that one itself 1 ms later.
 */
static bool
above_share(const pt_server_t *srv)
{
    size_t loops = (size_t)srv->cfg->loops;

    return loops > 1 && srv->nconns * loops > atomic_load_explicit(&srv->totals->nconns, memory_order_relaxed);
}

static void
on_accept_hold(uv_timer_t *t)
{
    pt_server_t *srv = t->data;
    int i;

    for (i = 0; i < srv->nlisteners; i++) {
        pt_listener_t *ls = &srv->listeners[i];

        if (ls->held && !ls->paused && !uv_is_closing(&ls->h.handle)) {
            ls->held = false;
            accept_one(srv, ls);
        }
    }
}

static void
on_connection(uv_stream_t *server, int status)
{
    pt_listener_t *ls = server->data;
    pt_server_t *srv = ls->srv;

    if (status == UV_EMFILE || status == UV_ENFILE) {
        listen_pause(srv, "out of file descriptors");
        return;
    }
    if (status < 0) {
        pt_log_error("accept on %s: %s", ls->url, uv_strerror(status));
        return;
    }
    if (above_share(srv)) {
        ls->held = true;
        uv_timer_start(&srv->accept_hold, on_accept_hold, 1, 0);
        return;
    }
    accept_one(srv, ls);
}

int
pt_listen_socket(const char *spec, const pt_config_t *cfg, bool reuse_port, int *out)
{
    char host[256];
    int port, fd = -1, one = 1, r;
    bool is_unix;
    struct sockaddr_storage ss;
    socklen_t sslen;

    if (pt_bind_parse(spec, host, sizeof(host), &port, &is_unix) < 0) {
        pt_log_error("bad --bind '%s': use HOST:PORT, [IPv6]:PORT or unix:/path", spec);
        return UV_EINVAL;
    }
    memset(&ss, 0, sizeof(ss));
    if (is_unix) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
        struct stat st;

        if (strlen(host) >= sizeof(sun->sun_path)) {
            pt_log_error("cannot listen on %s: the path is too long", spec);
            return UV_ENAMETOOLONG;
        }
        sun->sun_family = AF_UNIX;
        strcpy(sun->sun_path, host);
        sslen = sizeof(*sun);
        /* A stale socket file from a previous run would make bind fail with EADDRINUSE. */
        if (stat(host, &st) == 0 && S_ISSOCK(st.st_mode)) {
            unlink(host);
        }
    } else if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) == 0) {
        sslen = sizeof(struct sockaddr_in);
    } else if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) == 0) {
        sslen = sizeof(struct sockaddr_in6);
    } else {
        pt_log_error("bad --bind '%s': '%s' is not an IPv4 or IPv6 address", spec, host);
        return UV_EINVAL;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    r = fd < 0 ? -errno : 0;
    if (r == 0 && !is_unix) {
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0
            || (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
            || (ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)) {
            r = -errno;
        }
    }
    if (r == 0 && (bind(fd, (struct sockaddr *)&ss, sslen) < 0 || listen(fd, cfg->backlog) < 0)) {
        r = -errno;
    }
    /* Who may connect to a unix socket is its file mode (connecting needs write permission). */
    if (r == 0 && is_unix && cfg->unix_mode >= 0 && chmod(host, (mode_t)cfg->unix_mode) < 0) {
        r = -errno;
    }
    if (r < 0) {
        pt_log_error("cannot listen on %s: %s", spec, uv_strerror(r));
        if (fd >= 0) {
            close(fd);
        }
        return r;
    }
    *out = fd;
    return 0;
}

int
pt_listen_describe(int fd, pt_listener_t *ls)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        return -errno;
    }
    if (ss.ss_family == AF_UNIX) {
        ls->is_unix = true;
        snprintf(ls->name, sizeof(ls->name), "%s", ((struct sockaddr_un *)&ss)->sun_path);
        snprintf(ls->url, sizeof(ls->url), "unix:%s%s", ls->name, ls->tls ? " (TLS)" : "");
    } else if (ss.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&ss, ls->name, sizeof(ls->name));
        ls->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        snprintf(ls->url, sizeof(ls->url), "%s://[%s]:%d", ls->tls ? "https" : "http", ls->name, ls->port);
    } else if (ss.ss_family == AF_INET) {
        uv_ip4_name((struct sockaddr_in *)&ss, ls->name, sizeof(ls->name));
        ls->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        snprintf(ls->url, sizeof(ls->url), "%s://%s:%d", ls->tls ? "https" : "http", ls->name, ls->port);
    } else {
        return UV_EINVAL;
    }
    return 0;
}

int
pt_listen_fd(pt_server_t *srv, pt_listener_t *ls, int fd)
{
    int r = pt_listen_describe(fd, ls);

    ls->srv = srv;
    ls->h.handle.data = ls;
    if (r < 0) {
        pt_log_error("cannot listen on fd %d: %s", fd, r == UV_EINVAL ? "not a TCP or unix socket" : uv_strerror(r));
        return r;
    }
    if (ls->is_unix) {
        r = uv_pipe_init(srv->loop, &ls->h.pipe, 0);
        if (r == 0) {
            r = uv_pipe_open(&ls->h.pipe, fd);
        }
    } else {
        r = uv_tcp_init(srv->loop, &ls->h.tcp);
        if (r == 0) {
            r = uv_tcp_open(&ls->h.tcp, fd);
        }
    }
    if (r == 0) {
        r = uv_listen(&ls->h.stream, srv->cfg->backlog, on_connection);
    }
    if (r < 0) {
        pt_log_error("cannot listen on %s: %s", ls->url, uv_strerror(r));
        return r;
    }
    /* Without a spare descriptor accepting cannot pause (listen_pause): it then goes on as libuv does. */
    ls->spare_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    return 0;
}

int
pt_listen_all(pt_server_t *srv, pt_listener_t **out, int *count)
{
    const pt_config_t *cfg = srv->cfg;
    int n = cfg->nbinds + cfg->nfds;
    pt_listener_t *ls = calloc((size_t)n, sizeof(*ls));
    int i, r = 0;

    if (ls == NULL) {
        return UV_ENOMEM;
    }
    *out = ls;
    srv->listeners = ls;
    for (i = 0; i < n; i++) {
        ls[i].spare_fd = -1;
    }
    for (i = 0; i < n && r == 0; i++) {
        int fd = -1;

        if (i < cfg->nbinds) {
            r = pt_listen_socket(cfg->binds[i], cfg, false, &fd);
            ls[i].owned = r == 0 && strncmp(cfg->binds[i], "unix:", 5) == 0;
        } else {
            fd = cfg->fds[i - cfg->nbinds];
        }
        if (r == 0) {
            ls[i].tls = cfg->listen_tls[i];
            r = pt_listen_fd(srv, &ls[i], fd);
        }
        *count = i + 1;
        srv->nlisteners = i + 1;
    }
    srv->conn_budget = descriptor_budget();
    return r;
}

void
pt_listen_close_all(pt_listener_t *ls, int count)
{
    int i;

    for (i = 0; i < count; i++) {
        if (ls[i].h.handle.loop != NULL && !uv_is_closing(&ls[i].h.handle)) {
            uv_close(&ls[i].h.handle, NULL);
            ls[i].held = false;
        }
        if (ls[i].spare_fd >= 0) {
            close(ls[i].spare_fd);
            ls[i].spare_fd = -1;
        }
    }
    if (count > 0 && ls[0].srv != NULL) {
        ls[0].srv->nlisteners = 0; /* nothing to resume */
    }
}
