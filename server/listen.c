#include "listen.h"

#include <errno.h>
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

static void
on_connection(uv_stream_t *server, int status)
{
    pt_listener_t *ls = server->data;
    pt_server_t *srv = ls->srv;
    pt_conn_t *c;
    int r;

    if (status < 0) {
        pt_log_error("accept on %s: %s", ls->url, uv_strerror(status));
        return;
    }
    c = pt_conn_new(srv);
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
    r = uv_accept(server, &c->h.stream);
    if (r < 0) {
        /* EMFILE and friends: log and carry on serving the connections we have. */
        pt_log_error("accept on %s: %s", ls->url, uv_strerror(r));
        pt_conn_discard(c, true);
        return;
    }
    pt_conn_start(srv, ls, c);
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
        snprintf(ls->url, sizeof(ls->url), "unix:%s", ls->name);
    } else if (ss.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&ss, ls->name, sizeof(ls->name));
        ls->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        snprintf(ls->url, sizeof(ls->url), "http://[%s]:%d", ls->name, ls->port);
    } else if (ss.ss_family == AF_INET) {
        uv_ip4_name((struct sockaddr_in *)&ss, ls->name, sizeof(ls->name));
        ls->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        snprintf(ls->url, sizeof(ls->url), "http://%s:%d", ls->name, ls->port);
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
    }
    return r;
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
    for (i = 0; i < n && r == 0; i++) {
        int fd = -1;

        if (i < cfg->nbinds) {
            r = pt_listen_socket(cfg->binds[i], cfg, false, &fd);
            ls[i].owned = r == 0 && strncmp(cfg->binds[i], "unix:", 5) == 0;
        } else {
            fd = cfg->fds[i - cfg->nbinds];
        }
        if (r == 0) {
            r = pt_listen_fd(srv, &ls[i], fd);
        }
        *count = i + 1;
    }
    return r;
}

void
pt_listen_close_all(pt_listener_t *ls, int count)
{
    int i;

    for (i = 0; i < count; i++) {
        if (ls[i].h.handle.loop != NULL && !uv_is_closing(&ls[i].h.handle)) {
            uv_close(&ls[i].h.handle, NULL);
        }
    }
}
