/*
 * --gil-monitor under --processes: the master has no GIL, so it serves the page (from gateway/, through app.h) and
 * /workers, where the page finds each worker's own monitor (on an ephemeral port the worker reported on its control
 * line) and streams their GILs side by side. On a side server: the master's loop may be busy starting workers.
 */
#include <string.h>

#include "log.h"
#include "master.h"
#include "side_server.h"

static pt_side_server_t S;
static pt_worker_list_t *workers;

static void
on_request(pt_app_t *app, pt_request_t *req)
{
    if (pt_side_server_path_is(req, "/workers")) {
        char json[sizeof(workers->json)];

        uv_mutex_lock(&workers->lock);
        memcpy(json, workers->json, sizeof(json));
        uv_mutex_unlock(&workers->lock);
        pt_side_server_respond(req, "200 OK", "application/json", json, strlen(json));
    } else if (pt_side_server_path_is(req, "/") || pt_side_server_path_is(req, "/index.html")) {
        size_t len;
        const char *html = pt_gil_page(&len);

        pt_side_server_respond(req, "200 OK", "text/html; charset=utf-8", html, len);
    } else {
        static const char msg[] = "the master has no GIL: see /workers for each worker's monitor\n";

        pt_side_server_respond(req, "404 Not Found", "text/plain", msg, sizeof(msg) - 1);
    }
}

int
pt_master_monitor_start(const pt_config_t *cfg, pt_worker_list_t *list)
{
    pt_app_t app = { .on_request = on_request, .description = "gil page" };
    int r;

    workers = list;
    r = pt_side_server_listen(&S, cfg, cfg->gil_monitor, &app);
    if (r < 0) {
        return r;
    }
    pt_log_info("GIL monitor (every worker's GIL) on %s", pt_side_server_url(&S));
    return pt_side_server_run(&S, NULL);
}
