/*
 * A bounded load on the server's own loopback address, from a side server's loop (the GIL page's buttons).
 */
#ifndef PT_LOOPBACK_LOAD_H
#define PT_LOOPBACK_LOAD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "listen.h"

#define PT_LOAD_MAX_CLIENTS 16
#define PT_LOAD_MAX_SECONDS 30
#define PT_LOAD_MAX_PATH 400

/* The first loopback TCP listener (0.0.0.0 and :: count as 127.0.0.1 and ::1): where loads go. Loop thread, once. */
void pt_load_set_target(const pt_listener_t *ls, int n);
/* n_a clients on path_a and n_b on path_b, each sending GET back to back for `seconds`, on `loop`, labelled. 0, or -1
 * with why in err (no loopback listener, a load already running, out of bounds). The loop's thread only. */
int pt_load_start(uv_loop_t *loop, const char *label, const char *path_a, int n_a, const char *path_b, int n_b,
                  double seconds, char *err, size_t cap);
/* {"running", "label", "clients", "remaining_s", "requests", "errors", "target"}. The loop's thread only. */
void pt_load_json(pt_buf_t *b, uint64_t now_ms);

#endif
