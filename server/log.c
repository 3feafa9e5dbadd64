#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "request.h"

pt_log_level_t pt_log_level = PT_LOG_INFO;
bool pt_log_gil_wait;

static const char *const level_names[] = { "debug", "info", "warning", "error", "critical" };

void
pt_log(pt_log_level_t level, const char *fmt, ...)
{
    char line[2048];
    struct tm tm;
    time_t now;
    va_list ap;
    int n;

    if (level < pt_log_level) {
        return;
    }
    now = time(NULL);
    localtime_r(&now, &tm);
    n = (int)strftime(line, sizeof(line), "[%Y-%m-%d %H:%M:%S] ", &tm);
    n += snprintf(line + n, sizeof(line) - (size_t)n, "[%d] %s: ", (int)getpid(), level_names[level]);
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(line) - 2) {
        n = (int)sizeof(line) - 2;
    }
    line[n++] = '\n';
    /* One write per line keeps lines whole when several threads log at once. */
    if (write(STDERR_FILENO, line, (size_t)n) < 0) {
        return;
    }
}

/* The CLF timestamp, formatted once per second by each loop thread. */
static const char *
clf_time(void)
{
    static _Thread_local time_t cached_at = -1;
    static _Thread_local char when[40];
    time_t now = time(NULL);

    if (now != cached_at) {
        struct tm tm;

        localtime_r(&now, &tm);
        strftime(when, sizeof(when), "%d/%b/%Y:%H:%M:%S %z", &tm);
        cached_at = now;
    }
    return when;
}

void
pt_log_access_refused(const char *remote_addr, int status)
{
    fprintf(stdout, "%s - - [%s] \"-\" %d - -\n", remote_addr, clf_time(), status);
}

/* The access log: stdout, fully buffered by stdio (flushed by main every second and at exit). */
void
pt_log_access(const struct pt_request_s *req, int status, uint64_t bytes, uint64_t end_ns)
{
    const char *when = clf_time();

    fprintf(stdout, "%s - - [%s] \"%.*s %.*s HTTP/%s\" %d %llu %.6f", req->remote_addr, when, (int)req->method.len,
            req->method.base, (int)req->target.len, req->target.base,
            req->h2 != NULL       ? "2"
                : req->http_minor ? "1.1"
                                  : "1.0",
            status, (unsigned long long)bytes, (double)(end_ns - req->start_ns) / 1e9);
    if (pt_log_gil_wait) {
        fprintf(stdout, " gil_wait=%.6f/%.6f", (double)req->gil_wait_start_ns / 1e9,
                (double)req->gil_wait_run_ns / 1e9);
    }
    fputc('\n', stdout);
}

void
pt_log_access_ws(const struct pt_request_s *req, uint64_t bytes, unsigned close_code, uint64_t end_ns)
{
    fprintf(stdout, "%s - - [%s] \"%.*s %.*s HTTP/1.%d\" 101 %llu %.6f ws_close=%u\n", req->remote_addr, clf_time(),
            (int)req->method.len, req->method.base, (int)req->target.len, req->target.base, req->http_minor,
            (unsigned long long)bytes, (double)(end_ns - req->start_ns) / 1e9, close_code);
}

void
pt_log_flush(void)
{
    fflush(stdout);
}
