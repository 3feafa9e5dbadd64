/*
 * Listening sockets: --bind HOST:PORT, [v6]:PORT and unix:/path. Accepted connections go to conn.c.
 */
#ifndef PT_LISTEN_H
#define PT_LISTEN_H

#include <stdbool.h>
#include <uv.h>

#include "config.h"
#include "server.h"

typedef struct pt_listener_s pt_listener_t;

struct pt_listener_s {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    pt_server_t *srv;
    bool is_unix;
    bool owned;      /* a unix socket file this process created (and removes at exit) */
    char name[256];  /* SERVER_NAME: the bound host, or the socket path */
    int port;        /* the bound port (the real one when 0 was asked) */
    char url[300];   /* for the "listening on" line */
    int spare_fd;    /* a second descriptor of the socket: it stays open, backlog and all, while accepting pauses */
    bool paused;     /* the handle is closed (or closing) until pt_listen_resume */
    bool reopenable; /* paused and its close callback has run */
    bool held;       /* --loops: a connection the kernel gave it waits in libuv for accept_hold (listen.c) */
    bool tls;        /* serves TLS (cfg->listen_tls, tls.h): set before pt_listen_fd */
};

/* Listens on every --bind and --fd. Returns 0, or a negative libuv error after logging which address failed. */
int pt_listen_all(pt_server_t *srv, pt_listener_t **out, int *count);
/* A listening socket for one --bind (non-blocking, close-on-exec): the master makes these for its workers.
 * Returns 0 and the fd, or a negative libuv error after logging it. */
int pt_listen_socket(const char *spec, const pt_config_t *cfg, bool reuse_port, int *fd);
/* Fills in a listener's name, port and url from a socket (0, or a negative libuv error). */
int pt_listen_describe(int fd, pt_listener_t *ls);
/* Accepts on an already listening socket (an --fd, or one inherited from the master). */
int pt_listen_fd(pt_server_t *srv, pt_listener_t *ls, int fd);
/* Stops accepting (graceful shutdown). */
void pt_listen_close_all(pt_listener_t *ls, int count);
/* Accepting again after a pause (out of descriptors, or --max-connections), if the cause is gone: called when a
 * connection closes, and every second while paused. */
void pt_listen_resume(pt_server_t *srv);
/* Parses "host:port", "[v6]:port" or "unix:/path" (exposed for the unit tests). Returns 0 or -EINVAL. */
int pt_bind_parse(const char *spec, char *host, size_t hostlen, int *port, bool *is_unix);

#endif
