/*
 * What the fuzz targets share (fuzz_conn.c): the server with its C app, and one run of an input through a
 * connection.
 */
#ifndef PT_FUZZ_CONN_H
#define PT_FUZZ_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Once: the configuration (as on ponte's command line) and the server. */
void fuzz_setup(int argc, char **argv);
/* `head` (sent first, in one piece), then `data` in reads a hash of it chooses, then the half-close. Returns what
 * the server sent (malloc'd, *len bytes); *still_open when the server did not close the connection (it is then
 * closed). */
char *fuzz_run(const uint8_t *head, size_t head_len, const uint8_t *data, size_t size, size_t *len, bool *still_open);

#endif
