/*
 * The error log (stderr, unbuffered, one line per event) and the access log (stdout, buffered, flushed every second
 * and at exit). Both are written from any thread.
 */
#ifndef PT_LOG_H
#define PT_LOG_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

extern pt_log_level_t pt_log_level;
extern bool pt_log_gil_wait; /* --access-log-gil */

void pt_log(pt_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define pt_log_debug(...)                      \
    do {                                       \
        if (pt_log_level <= PT_LOG_DEBUG)      \
            pt_log(PT_LOG_DEBUG, __VA_ARGS__); \
    } while (0)
#define pt_log_info(...) pt_log(PT_LOG_INFO, __VA_ARGS__)
#define pt_log_warning(...) pt_log(PT_LOG_WARNING, __VA_ARGS__)
#define pt_log_error(...) pt_log(PT_LOG_ERROR, __VA_ARGS__)

struct pt_request_s;
/* One Common Log Format line plus the duration in seconds; loop thread only. */
void pt_log_access(const struct pt_request_s *req, int status, uint64_t bytes, uint64_t end_ns);
/* A WebSocket, once it is over: the request line, 101, the bytes of the messages sent, the duration, the close
 * code. */
void pt_log_access_ws(const struct pt_request_s *req, uint64_t bytes, unsigned close_code, uint64_t end_ns);
/* A request refused before it was parsed (400, 408, 413, 431...): no request line to show. */
void pt_log_access_refused(const char *remote_addr, int status);
void pt_log_flush(void);

#endif
