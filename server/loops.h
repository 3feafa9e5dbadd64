/*
 * --loops N: the app served from N event loops at once, each on its own thread with its own libuv loop and
 * pt_server_t, all accepting on the same listening sockets (each loop its own descriptor of each). The first loop is
 * main.c's, on the main thread; this file runs the others and carries main's orders to them (stop accepting and
 * finish, or close everything) through a uv_async_t each. The app makes each thread able to run it (app.h,
 * attach_loop); for ASGI on free-threaded CPython that is an asyncio loop per thread, running Python in parallel.
 * The limits (--max-connections, --limit-concurrency) and --max-requests count across every loop (server.h,
 * pt_server_totals_t).
 */
#ifndef PT_LOOPS_H
#define PT_LOOPS_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "listen.h"
#include "server.h"

/* Starts loops 2..cfg->loops, one at a time, each listening on its own descriptors of `listeners` before the next
 * starts. Main thread, before its loop runs. 0, or -1 after saying why (the loops already started are stopped). */
int pt_loops_start(pt_server_t *first, const pt_listener_t *listeners, int nlisteners);
/* Graceful shutdown in every other loop: stop accepting, finish what is in flight (pt_server_shutdown). */
void pt_loops_shutdown(void);
/* Every other loop closes all its connections at once and ends. */
void pt_loops_abort(void);
/* Calls done(arg) on the main loop once every other loop has ended (at once if none runs). */
void pt_loops_when_ended(void (*done)(void *arg), void *arg);
/* Joins the loop threads that have ended and frees them. false if one still runs (a forced stop: its app is stuck;
 * the caller must not finalise the interpreter under it). */
bool pt_loops_join(void);

#endif
