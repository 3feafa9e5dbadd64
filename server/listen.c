#include "listen.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

static int
listen_one(pt_server_t *srv, pt_listener_t *ls, const char *spec)
{
    char host[256];
    int port, r;
    bool is_unix;

    if (pt_bind_parse(spec, host, sizeof(host), &port, &is_unix) < 0) {
        pt_log_error("bad --bind '%s': use HOST:PORT, [IPv6]:PORT or unix:/path", spec);
        return UV_EINVAL;
    }
    ls->srv = srv;
    ls->is_unix = is_unix;
    ls->h.handle.data = ls;
    if (is_unix) {
        r = uv_pipe_init(srv->loop, &ls->h.pipe, 0);
        if (r == 0) {
            /* A stale socket file from a previous run would make bind fail with EADDRINUSE. */
            struct stat st;

            if (stat(host, &st) == 0 && S_ISSOCK(st.st_mode)) {
                unlink(host);
            }
            r = uv_pipe_bind(&ls->h.pipe, host);
        }
        snprintf(ls->name, sizeof(ls->name), "%s", host);
        ls->port = 0;
        snprintf(ls->url, sizeof(ls->url), "unix:%s", host);
    } else {
        struct sockaddr_storage ss;
        int namelen = sizeof(ss);

        r = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
        if (r < 0) {
            r = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss);
        }
        if (r < 0) {
            pt_log_error("bad --bind '%s': '%s' is not an IPv4 or IPv6 address", spec, host);
            return r;
        }
        r = uv_tcp_init(srv->loop, &ls->h.tcp);
        if (r == 0) {
            r = uv_tcp_bind(&ls->h.tcp, (struct sockaddr *)&ss, ss.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
        }
        if (r == 0) {
            r = uv_tcp_getsockname(&ls->h.tcp, (struct sockaddr *)&ss, &namelen);
        }
        if (r == 0) {
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        }
        snprintf(ls->name, sizeof(ls->name), "%s", host);
        ls->port = port;
        snprintf(ls->url, sizeof(ls->url), strchr(host, ':') ? "http://[%s]:%d" : "http://%s:%d", host, port);
    }
    if (r == 0) {
        r = uv_listen(&ls->h.stream, srv->cfg->backlog, on_connection);
    }
    if (r < 0) {
        pt_log_error("cannot listen on %s: %s", spec, uv_strerror(r));
        return r;
    }
    return 0;
}

int
pt_listen_all(pt_server_t *srv, pt_listener_t **out, int *count)
{
    const pt_config_t *cfg = srv->cfg;
    pt_listener_t *ls = calloc((size_t)cfg->nbinds, sizeof(*ls));
    int i, r;

    if (ls == NULL) {
        return UV_ENOMEM;
    }
    for (i = 0; i < cfg->nbinds; i++) {
        r = listen_one(srv, &ls[i], cfg->binds[i]);
        if (r < 0) {
            *out = ls;
            *count = i + 1;
            return r;
        }
    }
    *out = ls;
    *count = cfg->nbinds;
    return 0;
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
