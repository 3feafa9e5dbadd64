/*
 * Processes: the master (master.c) that binds, starts and supervises --processes N workers, and a worker's side of
 * the control line to it (worker.c).
 */
#ifndef PT_MASTER_H
#define PT_MASTER_H

#include <uv.h>

#include "config.h"
#include "server.h"

/* The longest line a worker sends its master on the control line, newline included. */
#define PT_CONTROL_LINE_MAX 512

/* Runs the master until it is stopped; returns the exit status. */
int pt_master_run(const pt_config_t *cfg, int argc, char **argv);

/*
 * --gil-monitor under --processes (master_monitor.c): the master serves the GIL page on the monitor address, and
 * the page shows every worker's GIL side by side, each streamed from that worker's own monitor. The master keeps
 * `workers` (JSON, in Prometheus http_sd form) current under `lock`; the page fetches it. 0 or a negative libuv error.
 */
typedef struct {
    uv_mutex_t lock;
    char json[16384];
} pt_worker_list_t;
int pt_master_monitor_start(const pt_config_t *cfg, pt_worker_list_t *workers);

/* In a worker: dies with the master, and opens the control line (call before loading the app). */
int pt_worker_init(const pt_config_t *cfg, uv_loop_t *loop);
/* In a worker: tells the master where this worker's GIL monitor listens (for the master's combined page). */
void pt_worker_report_monitor(const char *url);
/* In a worker, once it accepts: says "ready" and starts the heartbeat, --max-requests and --timeout checks. */
void pt_worker_ready(pt_server_t *srv);

#endif
