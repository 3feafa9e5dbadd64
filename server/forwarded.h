/*
 * --forwarded-allow-ips: behind a reverse proxy, take the client address and scheme from X-Forwarded-For,
 * X-Forwarded-Proto and Forwarded (RFC 7239), but only on connections from the proxies listed.
 */
#ifndef PT_FORWARDED_H
#define PT_FORWARDED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "resp.h"

#define PT_TRUST_MAX 32

typedef struct {
    int family; /* AF_INET, AF_INET6, or AF_UNIX for "unix" (connections on a unix socket) */
    uint8_t addr[16];
    int prefix; /* CIDR bits */
} pt_trust_net_t;

typedef struct {
    bool any; /* "*": every peer is a proxy */
    int n;
    pt_trust_net_t nets[PT_TRUST_MAX];
} pt_trust_t;

/* Parses "127.0.0.1,10.0.0.0/8,::1,unix" or "*". Returns 0 or -1 (and says which item is wrong in `why`). */
int pt_trust_parse(const char *list, pt_trust_t *t, char *why, size_t whylen);
/* Whether a peer address ("unix" for a unix socket) is a trusted proxy. */
bool pt_trust_has(const pt_trust_t *t, const char *addr);

/*
 * Rewrites the client address and scheme from the proxy headers when the peer `addr` is trusted: the client is the
 * rightmost address in the chain that is not itself a trusted proxy (so a client cannot forge its way past the
 * proxies), the scheme the one the nearest proxy reports. `addr` (addrlen bytes) is replaced in place; `*scheme`
 * points at a static "http" or "https". Returns whether anything changed.
 */
bool pt_forwarded_apply(const pt_trust_t *t, const pt_header_t *headers, size_t n, char *addr, size_t addrlen,
                        const char **scheme);

#endif
