/*
 * --processes N: the master. It binds the sockets, starts N workers and supervises them; it never imports the app.
 *
 * A worker is this same executable run again with "--worker SLOT:NSOCKETS" in front of the user's arguments, so each
 * one starts a fresh interpreter (its own GIL) and imports the app anew: that is what makes SIGHUP a real code
 * reload. It finds the listening sockets at fds 3.. and, after them, a control line (a socketpair) on which it
 * tells the master "ready" once it accepts, "beat" every second under --timeout, and "retire <why>" when it wants a
 * successor (--max-requests reached, a request stuck past --timeout).
 *
 * Replacing a worker always starts the successor first and stops the predecessor (SIGTERM: finish what is in
 * flight) only once the successor is ready. The sockets stay open in the master the whole time, so the kernel keeps
 * queueing connections and none is refused: that is the zero-downtime reload.
 *
 * Shared socket or SO_REUSEPORT: by default all workers accept on the same socket (the kernel wakes one waiting
 * worker per connection); --reuse-port gives each slot its own socket on the same port and the kernel spreads
 * connections by a hash of the client address. The master keeps a slot's socket across generations, so a reload
 * does not drop the connections queued on it either. docs/deploy.md compares the two.
 */
#include "master.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app.h"
#include "listen.h"
#include "log.h"
#include "tls.h"

#define MAX_SLOTS 256
#define MAX_WORKERS (2 * MAX_SLOTS) /* during a reload each slot may have a predecessor and a successor */
#define TICK_MS 200
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000
#define STUCK_KILL_MS 1000 /* after SIGUSR2 (dump the Python stacks), how long until SIGKILL */

typedef struct {
    uv_process_t proc;
    uv_pipe_t ctl;
    int slot;
    int handles_open;
    bool used, exited, ready, stopping, has_successor;
    bool dumped; /* asked (SIGUSR2) for its Python stacks before it is killed */
    uint64_t started_ms, beat_ms, kill_at_ms;
    char monitor[300]; /* its GIL monitor, "127.0.0.1:41234" (--gil-monitor) */
    char line[PT_CONTROL_LINE_MAX + 1];
    size_t linelen;
} pt_worker_t;

static struct {
    const pt_config_t *cfg;
    uv_loop_t *loop;
    char exe[PATH_MAX];
    char **args; /* the worker's argv: exe, --worker, SLOT:N, then the user's arguments */
    char slot_arg[32];
    int nsock;
    int *socks; /* nsock per slot with --reuse-port (slot-major), else nsock shared */
    pt_worker_t w[MAX_WORKERS];
    uint64_t backoff_ms[MAX_SLOTS + 1], respawn_at[MAX_SLOTS + 1];
    pt_worker_list_t monitors; /* for the GIL page (--gil-monitor), rebuilt whenever a worker changes */
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t tick;
    bool stopping, ever_ready, done;
    int signals, exit_code;
} master;

/* --reload's watches (see watch_tree). */
#define WATCH_MAX 1024
#define WATCH_SETTLE_MS 300

static uv_fs_event_t *watches[WATCH_MAX];
static int nwatches;
static uv_timer_t settle;
static char changed[256];

static void spawn(int slot);
static void publish_monitors(void);

static void
free_handle(uv_handle_t *h)
{
    free(h);
}

static int
alive(void)
{
    int i, n = 0;

    for (i = 0; i < MAX_WORKERS; i++) {
        n += master.w[i].used && !master.w[i].exited;
    }
    return n;
}

/* The worker serving a slot now (not being stopped), other than `except`. */
static pt_worker_t *
serving(int slot, const pt_worker_t *except)
{
    int i;

    for (i = 0; i < MAX_WORKERS; i++) {
        pt_worker_t *w = &master.w[i];

        if (w != except && w->used && !w->exited && !w->stopping && w->slot == slot) {
            return w;
        }
    }
    return NULL;
}

static void
stop_worker(pt_worker_t *w, int sig)
{
    if (!w->exited) {
        w->stopping = true;
        kill(w->proc.pid, sig);
        publish_monitors();
    }
}

static void
master_done(void)
{
    int i;

    if (master.done) {
        return;
    }
    master.done = true;
    uv_close((uv_handle_t *)&master.sigterm, NULL);
    uv_close((uv_handle_t *)&master.sigint, NULL);
    uv_close((uv_handle_t *)&master.sighup, NULL);
    uv_close((uv_handle_t *)&master.tick, NULL);
    if (master.cfg->reload) {
        uv_close((uv_handle_t *)&settle, NULL);
        for (i = 0; i < nwatches; i++) {
            uv_close((uv_handle_t *)watches[i], free_handle);
        }
    }
    for (i = 0; i < master.nsock * (master.cfg->reuse_port ? master.cfg->processes : 1); i++) {
        close(master.socks[i]);
    }
}

static void
on_worker_closed(uv_handle_t *h)
{
    pt_worker_t *w = h->data;

    if (--w->handles_open == 0) {
        memset(w, 0, sizeof(*w)); /* the record is free again */
        if (master.stopping && alive() == 0) {
            master_done();
        }
    }
}

static void
on_worker_exit(uv_process_t *p, int64_t status, int sig)
{
    pt_worker_t *w = p->data;
    uint64_t now = uv_now(master.loop);
    pt_worker_t *pred;

    w->exited = true;
    w->monitor[0] = '\0';
    publish_monitors();
    if (sig) {
        pt_log_warning("worker %d (pid %d) was killed by signal %d (%s)", w->slot, p->pid, sig, strsignal(sig));
    } else if (status != 0 || !w->stopping) {
        pt_log_warning("worker %d (pid %d) exited with status %d%s", w->slot, p->pid, (int)status,
                       w->ready ? "" : " before it was ready");
    } else {
        pt_log_info("worker %d (pid %d) stopped", w->slot, p->pid);
    }
    uv_close((uv_handle_t *)&w->proc, on_worker_closed);
    if (!uv_is_closing((uv_handle_t *)&w->ctl)) {
        uv_close((uv_handle_t *)&w->ctl, on_worker_closed);
    }
    if (master.stopping) {
        return;
    }
    if (!w->ready && !master.ever_ready) {
        /* The app does not even start: say so once and stop, as a lone process would, instead of looping. */
        pt_log_error("worker %d failed to boot; stopping (see its error above)", w->slot);
        master.exit_code = 1;
        master.stopping = true;
        for (int i = 0; i < MAX_WORKERS; i++) {
            if (master.w[i].used) {
                stop_worker(&master.w[i], SIGTERM);
            }
        }
        return;
    }
    pred = serving(w->slot, w);
    if (pred != NULL) {
        if (!w->ready && pred->has_successor) {
            /* A successor died on the way up (a reload of broken code): the predecessor goes on serving. */
            pred->has_successor = false;
            pt_log_error("reload of worker %d failed: worker %d (pid %d) keeps serving the previous code", w->slot,
                         pred->slot, pred->proc.pid);
        }
        return;
    }
    /* Nobody serves this slot any more: replace at once, unless workers keep dying young (then back off). */
    if (w->ready && now - w->started_ms > 2000) {
        master.backoff_ms[w->slot] = 0;
    } else {
        master.backoff_ms[w->slot] = master.backoff_ms[w->slot] ? master.backoff_ms[w->slot] * 2 : BACKOFF_MIN_MS;
        if (master.backoff_ms[w->slot] > BACKOFF_MAX_MS) {
            master.backoff_ms[w->slot] = BACKOFF_MAX_MS;
        }
        pt_log_warning("worker %d keeps exiting young: next start in %.1fs", w->slot,
                       (double)master.backoff_ms[w->slot] / 1000);
    }
    master.respawn_at[w->slot] = now + master.backoff_ms[w->slot] + 1;
}

static void
on_ctl_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    pt_worker_t *w = h->data;

    buf->base = w->line + w->linelen;
    buf->len = sizeof(w->line) - w->linelen - 1;
}

static void
on_line(pt_worker_t *w, const char *line)
{
    uint64_t now = uv_now(master.loop);
    int i;

    if (strcmp(line, "ready") == 0) {
        w->ready = true;
        w->beat_ms = now;
        master.ever_ready = true;
        pt_log_info("worker %d (pid %d) ready", w->slot, w->proc.pid);
        publish_monitors();
        /* The predecessor of this slot, if any, can go now: the successor accepts. */
        for (i = 0; i < MAX_WORKERS; i++) {
            pt_worker_t *o = &master.w[i];

            if (o != w && o->used && !o->exited && !o->stopping && o->slot == w->slot && o->has_successor) {
                stop_worker(o, SIGTERM);
            }
        }
    } else if (strncmp(line, "monitor http://", 15) == 0) {
        snprintf(w->monitor, sizeof(w->monitor), "%s", line + 15);
        publish_monitors();
    } else if (strcmp(line, "beat") == 0) {
        w->beat_ms = now;
    } else if (strncmp(line, "retire ", 7) == 0) {
        pt_log_info("worker %d (pid %d) asks to be replaced (%s)", w->slot, w->proc.pid, line + 7);
        if (!w->has_successor && !w->stopping && !master.stopping) {
            w->has_successor = true;
            spawn(w->slot);
        }
    } else {
        pt_log_warning("worker %d (pid %d) said something unexpected: '%s'", w->slot, w->proc.pid, line);
    }
}

static void
on_ctl_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    pt_worker_t *w = s->data;
    char *nl;

    if (n < 0) {
        uv_close((uv_handle_t *)s, on_worker_closed); /* EOF: the worker exited or closed its end */
        return;
    }
    w->linelen += (size_t)n;
    w->line[w->linelen] = '\0';
    while ((nl = strchr(w->line, '\n')) != NULL) {
        *nl = '\0';
        on_line(w, w->line);
        w->linelen -= (size_t)(nl + 1 - w->line);
        memmove(w->line, nl + 1, w->linelen + 1);
    }
    if (w->linelen == sizeof(w->line) - 1) {
        w->linelen = 0; /* a line this long is not ours: drop it */
    }
}

static void
spawn(int slot)
{
    uv_stdio_container_t stdio[3 + PT_MAX_BINDS + 1];
    uv_process_options_t opt;
    pt_worker_t *w = NULL;
    int i, r, *socks = master.socks + (master.cfg->reuse_port ? (slot - 1) * master.nsock : 0);

    for (i = 0; i < MAX_WORKERS && w == NULL; i++) {
        if (!master.w[i].used) {
            w = &master.w[i];
        }
    }
    if (w == NULL) {
        pt_log_error("cannot start worker %d: too many workers", slot);
        return;
    }
    memset(w, 0, sizeof(*w));
    w->slot = slot;
    uv_pipe_init(master.loop, &w->ctl, 0);
    w->ctl.data = w;
    w->proc.data = w;
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = 1;
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = 2;
    for (i = 0; i < master.nsock; i++) {
        stdio[3 + i].flags = UV_INHERIT_FD;
        stdio[3 + i].data.fd = socks[i];
    }
    stdio[3 + master.nsock].flags = UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE;
    stdio[3 + master.nsock].data.stream = (uv_stream_t *)&w->ctl;
    snprintf(master.slot_arg, sizeof(master.slot_arg), "%d:%d", slot, master.nsock);
    memset(&opt, 0, sizeof(opt));
    opt.file = master.exe;
    opt.args = master.args;
    opt.exit_cb = on_worker_exit;
    opt.stdio = stdio;
    opt.stdio_count = 3 + master.nsock + 1;
    /* Its own session: a terminal's Ctrl-C reaches the master only, which stops the workers in order. */
    opt.flags = UV_PROCESS_DETACHED;
    r = uv_spawn(master.loop, &w->proc, &opt);
    if (r < 0) {
        pt_log_error("cannot start worker %d: %s", slot, uv_strerror(r));
        w->used = w->exited = true; /* freed when the control pipe has closed */
        w->handles_open = 1;
        uv_close((uv_handle_t *)&w->ctl, on_worker_closed);
        master.respawn_at[slot] = uv_now(master.loop) + BACKOFF_MAX_MS;
        return;
    }
    /* The new process made the listening sockets blocking on its way to exec (libuv does so for the descriptors a
     * child inherits), and O_NONBLOCK belongs to the socket, shared with every worker: until the new worker listens
     * and sets it back, or for ever if it dies first (a reload of broken code), a worker that accepts loops into
     * an accept() that blocks, and its loop hears nothing more, not even SIGTERM. uv_spawn returns once the child
     * has exec'd: set it back now. */
    for (i = 0; i < master.nsock; i++) {
        int fl = fcntl(socks[i], F_GETFL);

        if (fl >= 0 && !(fl & O_NONBLOCK)) {
            fcntl(socks[i], F_SETFL, fl | O_NONBLOCK);
        }
    }
    w->used = true;
    w->handles_open = 2;
    w->started_ms = uv_now(master.loop);
    uv_read_start((uv_stream_t *)&w->ctl, on_ctl_alloc, on_ctl_read);
    pt_log_info("worker %d started (pid %d)", slot, w->proc.pid);
}

static void
on_tick(uv_timer_t *t)
{
    uint64_t now = uv_now(master.loop);
    int i;

    for (i = 1; i <= master.cfg->processes && !master.stopping; i++) {
        if (master.respawn_at[i] && now >= master.respawn_at[i]) {
            master.respawn_at[i] = 0;
            if (serving(i, NULL) == NULL) {
                spawn(i);
            }
        }
    }
    for (i = 0; i < MAX_WORKERS; i++) {
        pt_worker_t *w = &master.w[i];

        if (!w->used || w->exited) {
            continue;
        }
        if (w->kill_at_ms && now >= w->kill_at_ms) {
            if (!w->dumped) {
                /* Past --graceful-timeout: where each of its threads is goes into the log first, as for --timeout. */
                pt_log_warning("worker %d (pid %d) did not stop within --graceful-timeout: its Python stacks follow, "
                               "then it is killed",
                               w->slot, w->proc.pid);
                kill(w->proc.pid, SIGUSR2);
                w->dumped = true;
                w->kill_at_ms = now + STUCK_KILL_MS;
            } else {
                pt_log_warning("worker %d (pid %d) did not stop: killing it", w->slot, w->proc.pid);
                kill(w->proc.pid, SIGKILL);
                w->kill_at_ms = 0;
            }
        } else if (w->stopping && !w->kill_at_ms) {
            w->kill_at_ms = now + (uint64_t)(master.cfg->graceful_timeout * 1000) + 5000;
        } else if (master.cfg->timeout > 0 && w->ready && !w->stopping
                   && now - w->beat_ms > (uint64_t)(master.cfg->timeout * 1000) + 1000) {
            /* No heartbeat: the worker's loop is blocked, by a request that never returns to it. */
            pt_log_error("worker %d (pid %d) has not answered for %.0fs (--timeout %gs): a request is blocking it; "
                         "its Python stacks follow, then it is replaced",
                         w->slot, w->proc.pid, (double)(now - w->beat_ms) / 1000, master.cfg->timeout);
            stop_worker(w, SIGUSR2);
            w->dumped = true;
            w->kill_at_ms = now + STUCK_KILL_MS;
        }
    }
}

/* Starts a successor for every slot; each predecessor stops once its successor is ready (on_line). */
static void
reload(const char *why)
{
    int i;

    if (master.stopping) {
        return;
    }
    pt_log_info("%s: reloading: starting %d new worker(s) with fresh code", why, master.cfg->processes);
    for (i = 1; i <= master.cfg->processes; i++) {
        pt_worker_t *w = serving(i, NULL);

        if (w != NULL && !w->has_successor) {
            w->has_successor = true;
            spawn(i);
        } else if (w == NULL) {
            master.respawn_at[i] = 0;
            spawn(i);
        }
    }
}

/* --reload: inotify (uv_fs_event) on the app directory and the directories under it; a changed .py file reloads,
 * once the burst of events an editor makes has settled. */

static void
on_settled(uv_timer_t *t)
{
    char why[300];

    snprintf(why, sizeof(why), "%s changed", changed);
    reload(why);
}

static void
on_fs_event(uv_fs_event_t *h, const char *name, int events, int status)
{
    size_t n = name ? strlen(name) : 0;

    if (status < 0 || n < 3 || strcmp(name + n - 3, ".py") != 0) {
        return;
    }
    snprintf(changed, sizeof(changed), "%s", name);
    uv_timer_start(&settle, on_settled, WATCH_SETTLE_MS, 0);
}

static void
watch_tree(const char *dir, int depth)
{
    uv_fs_t req;
    uv_dirent_t ent;
    uv_fs_event_t *h;

    if (nwatches == WATCH_MAX || depth > 8) {
        return;
    }
    h = calloc(1, sizeof(*h));
    if (h == NULL || uv_fs_event_init(master.loop, h) < 0 || uv_fs_event_start(h, on_fs_event, dir, 0) < 0) {
        pt_log_warning("--reload: cannot watch %s", dir);
        free(h);
        return;
    }
    watches[nwatches++] = h;
    if (uv_fs_scandir(NULL, &req, dir, 0, NULL) < 0) {
        return;
    }
    while (uv_fs_scandir_next(&req, &ent) != UV_EOF) {
        char sub[PATH_MAX];

        if (ent.type == UV_DIRENT_DIR && ent.name[0] != '.' && strcmp(ent.name, "__pycache__") != 0
            && strcmp(ent.name, "node_modules") != 0) {
            snprintf(sub, sizeof(sub), "%s/%s", dir, ent.name);
            watch_tree(sub, depth + 1);
        }
    }
    uv_fs_req_cleanup(&req);
}

static void
start_watching(void)
{
    uv_timer_init(master.loop, &settle);
    watch_tree(master.cfg->app_dir, 0);
    pt_log_info("--reload: watching %d director%s under %s for .py changes", nwatches, nwatches == 1 ? "y" : "ies",
                master.cfg->app_dir);
}

static void
on_signal(uv_signal_t *s, int signum)
{
    int i;

    if (signum == SIGHUP) {
        reload("SIGHUP");
        return;
    }
    if (++master.signals > 1) {
        pt_log_warning("second %s: stopping the workers now", strsignal(signum));
    } else {
        pt_log_info("%s: stopping %d worker(s) gracefully (up to %gs)", strsignal(signum), alive(),
                    master.cfg->graceful_timeout);
    }
    master.stopping = true;
    for (i = 0; i < MAX_WORKERS; i++) {
        if (master.w[i].used && !master.w[i].exited) {
            stop_worker(&master.w[i], SIGTERM); /* a worker's second SIGTERM aborts its requests */
        }
    }
    if (alive() == 0) {
        master_done();
    }
}

static const char *
worker_state(const pt_worker_t *w)
{
    if (w->stopping) {
        return "stopping";
    }
    return w->ready ? "ready" : "starting";
}

/* The live workers' GIL monitors as Prometheus HTTP service discovery JSON: the page reads it to find them, and
 * Prometheus can scrape every worker's /metrics from it (http_sd_configs). */
static void
publish_monitors(void)
{
    char *j = master.monitors.json;
    size_t n = 0, cap = sizeof(master.monitors.json);
    int i;

    if (master.cfg->gil_monitor == NULL) {
        return;
    }
    uv_mutex_lock(&master.monitors.lock);
    n += (size_t)snprintf(j + n, cap - n, "[");
    /* An entry is under 512 bytes (a monitor address is under 300): stop while one more surely fits. */
    for (i = 0; i < MAX_WORKERS && n < cap - 512; i++) {
        const pt_worker_t *w = &master.w[i];

        if (w->used && !w->exited && w->monitor[0]) {
            n += (size_t)snprintf(j + n, cap - n,
                                  "%s{\"targets\":[\"%s\"],\"labels\":{\"worker\":\"%d\",\"pid\":\"%d\","
                                  "\"state\":\"%s\"}}",
                                  n > 1 ? "," : "", w->monitor, w->slot, w->proc.pid, worker_state(w));
        }
    }
    snprintf(j + n, cap - n, "]");
    uv_mutex_unlock(&master.monitors.lock);
}

/* The worker's argv: the user's arguments with "--worker SLOT:N" in front (parsed first, see config.c). */
static int
make_args(int argc, char **argv)
{
    int i;

    master.args = calloc((size_t)argc + 3, sizeof(char *));
    if (master.args == NULL) {
        return UV_ENOMEM;
    }
    master.args[0] = master.exe;
    master.args[1] = "--worker";
    master.args[2] = master.slot_arg;
    for (i = 1; i < argc; i++) {
        master.args[i + 2] = argv[i];
    }
    return 0;
}

/* One listening socket: slot j's copy of address i (--reuse-port gives each slot its own). 0, or -1 (logged). */
static int
open_socket(const pt_config_t *cfg, int i, int j, int *fd)
{
    pt_listener_t first = { 0 };
    char spec[300];

    if (i >= cfg->nbinds) {
        *fd = cfg->fds[i - cfg->nbinds];
        return 0;
    }
    if (j == 0) {
        return pt_listen_socket(cfg->binds[i], cfg, cfg->reuse_port, fd) < 0 ? -1 : 0;
    }
    /* Another SO_REUSEPORT socket on the port the first one got (port 0 picks one); a unix socket cannot be bound
     * twice, so its slots share it. */
    pt_listen_describe(master.socks[i], &first);
    if (first.is_unix) {
        *fd = dup(master.socks[i]);
        return 0;
    }
    snprintf(spec, sizeof(spec), strchr(first.name, ':') ? "[%s]:%d" : "%s:%d", first.name, first.port);
    return pt_listen_socket(spec, cfg, true, fd) < 0 ? -1 : 0;
}

/* Every socket the workers accept on, bound before any worker starts. 0, or -1 (logged). */
static int
open_sockets(const pt_config_t *cfg)
{
    int i, j, copies = cfg->reuse_port ? cfg->processes : 1;

    master.socks = calloc((size_t)(master.nsock * copies), sizeof(int));
    if (master.socks == NULL) {
        return -1;
    }
    for (j = 0; j < copies; j++) {
        for (i = 0; i < master.nsock; i++) {
            int *fd = &master.socks[j * master.nsock + i];

            if (open_socket(cfg, i, j, fd) < 0) {
                return -1;
            }
            if (j == 0) {
                pt_listener_t desc = { 0 };

                desc.tls = cfg->listen_tls[i];
                pt_listen_describe(*fd, &desc);
                pt_log_info("master listening on %s%s", desc.url,
                            cfg->reuse_port ? " (SO_REUSEPORT: one socket per worker)" : "");
            }
        }
    }
    return 0;
}

int
pt_master_run(const pt_config_t *cfg, int argc, char **argv)
{
    size_t len = sizeof(master.exe);
    int i;

    master.cfg = cfg;
    master.loop = uv_default_loop();
    master.nsock = cfg->nbinds + cfg->nfds;
    if (cfg->processes > MAX_SLOTS || uv_exepath(master.exe, &len) < 0 || make_args(argc, argv) < 0) {
        pt_log_error("cannot start the master");
        return 1;
    }
    if (cfg->ssl_certfile != NULL) {
        /* Checked here once, so that a bad certificate, key or password is one clear line, not a worker failing
         * at every start. The workers load their own (and again at each reload: SIGHUP renews certificates). */
        pt_tls_ctx_t *tls = pt_tls_ctx_from_config(cfg);

        if (tls == NULL) {
            return 1;
        }
        pt_tls_ctx_free(tls);
    }
    if (open_sockets(cfg) < 0) {
        return 1;
    }
    uv_signal_init(master.loop, &master.sigterm);
    uv_signal_init(master.loop, &master.sigint);
    uv_signal_init(master.loop, &master.sighup);
    uv_signal_start(&master.sigterm, on_signal, SIGTERM);
    uv_signal_start(&master.sigint, on_signal, SIGINT);
    uv_signal_start(&master.sighup, on_signal, SIGHUP);
    uv_timer_init(master.loop, &master.tick);
    uv_timer_start(&master.tick, on_tick, TICK_MS, TICK_MS);
    if (cfg->reload) {
        start_watching();
    }
    if (cfg->gil_monitor != NULL) {
        uv_mutex_init(&master.monitors.lock);
        publish_monitors();
        if (pt_master_monitor_start(cfg, &master.monitors) < 0) {
            pt_log_error("cannot serve --gil-monitor on %s", cfg->gil_monitor);
            return 1;
        }
    }
    pt_log_info("master (pid %d) starting %d worker process(es) for %s", (int)getpid(), cfg->processes, cfg->app);
    for (i = 1; i <= cfg->processes; i++) {
        spawn(i);
    }
    uv_run(master.loop, UV_RUN_DEFAULT);
    for (i = 0; i < cfg->nbinds; i++) {
        if (strncmp(cfg->binds[i], "unix:", 5) == 0) {
            remove(cfg->binds[i] + 5);
        }
    }
    uv_loop_close(master.loop);
    free(master.socks);
    free(master.args);
    pt_log_info("master stopped");
    pt_log_flush();
    return master.exit_code;
}
