#include "forwarded.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

static int
parse_addr(const char *s, size_t len, uint8_t *out)
{
    char buf[64];

    if (len == 0 || len >= sizeof(buf)) {
        return -1;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, out) == 1) {
        return AF_INET;
    }
    if (inet_pton(AF_INET6, buf, out) == 1) {
        return AF_INET6;
    }
    return -1;
}

int
pt_trust_parse(const char *list, pt_trust_t *t, char *why, size_t whylen)
{
    const char *p = list;

    memset(t, 0, sizeof(*t));
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *slash;
        pt_trust_net_t *net = &t->nets[t->n];
        char *bits_end;
        long bits;

        while (len > 0 && *p == ' ') {
            p++, len--;
        }
        while (len > 0 && p[len - 1] == ' ') {
            len--;
        }
        if (len == 1 && *p == '*') {
            t->any = true;
        } else if (len > 0) {
            if (t->n == PT_TRUST_MAX) {
                snprintf(why, whylen, "more than %d entries", PT_TRUST_MAX);
                return -1;
            }
            slash = memchr(p, '/', len);
            if (len == 4 && memcmp(p, "unix", 4) == 0) {
                net->family = AF_UNIX;
            } else if ((net->family = parse_addr(p, slash ? (size_t)(slash - p) : len, net->addr)) < 0) {
                snprintf(why, whylen, "'%.*s' is not an IP address, a network like 10.0.0.0/8, unix or *", (int)len, p);
                return -1;
            }
            net->prefix = net->family == AF_INET ? 32 : net->family == AF_INET6 ? 128 : 0;
            if (slash != NULL) {
                bits = strtol(slash + 1, &bits_end, 10);
                if (bits_end != p + len || bits < 0 || bits > net->prefix) {
                    snprintf(why, whylen, "'%.*s' has a bad prefix length", (int)len, p);
                    return -1;
                }
                net->prefix = (int)bits;
            }
            t->n++;
        }
        p = end ? end + 1 : p + len;
        if (!end) {
            break;
        }
    }
    return 0;
}

static bool
in_net(const pt_trust_net_t *net, int family, const uint8_t *a)
{
    int full = net->prefix / 8, rest = net->prefix % 8;

    if (family != net->family) {
        return false;
    }
    if (memcmp(a, net->addr, (size_t)full) != 0) {
        return false;
    }
    return rest == 0 || ((a[full] ^ net->addr[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

static bool
trusted(const pt_trust_t *t, const char *s, size_t len)
{
    uint8_t a[16];
    int family, i;

    if (t->any) {
        return true;
    }
    family = len == 4 && memcmp(s, "unix", 4) == 0 ? AF_UNIX : parse_addr(s, len, a);
    for (i = 0; i < t->n; i++) {
        if (family == AF_UNIX ? t->nets[i].family == AF_UNIX : family > 0 && in_net(&t->nets[i], family, a)) {
            return true;
        }
    }
    return false;
}

bool
pt_trust_has(const pt_trust_t *t, const char *addr)
{
    return (t->any || t->n > 0) && trusted(t, addr, strlen(addr));
}

/* One hop of a chain, trimmed: IPv6 brackets, quotes (Forwarded) and a port are taken off. */
static pt_span_t
hop_address(pt_span_t v)
{
    const char *s = v.base, *e = v.base + v.len;

    while (s < e && (*s == ' ' || *s == '\t' || *s == '"')) {
        s++;
    }
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '"')) {
        e--;
    }
    if (s < e && *s == '[') {
        const char *close = memchr(s, ']', (size_t)(e - s));

        return close ? (pt_span_t){ s + 1, (size_t)(close - s - 1) } : (pt_span_t){ s, 0 };
    }
    /* "1.2.3.4:5678": one colon is a port; IPv6 has several and is left whole. */
    if (memchr(s, ':', (size_t)(e - s)) != NULL) {
        const char *colon = memchr(s, ':', (size_t)(e - s));

        if (memchr(colon + 1, ':', (size_t)(e - colon - 1)) == NULL) {
            e = colon;
        }
    }
    return (pt_span_t){ s, (size_t)(e - s) };
}

/* The list items of one header value, from the right. *pos starts at v.len; SIZE_MAX when the list is done. */
static bool
prev_item(pt_span_t v, size_t *pos, pt_span_t *item)
{
    size_t s, e = *pos;

    if (e == SIZE_MAX) {
        return false;
    }
    for (s = e; s > 0 && v.base[s - 1] != ','; s--) {
    }
    *item = (pt_span_t){ v.base + s, e - s };
    *pos = s == 0 ? SIZE_MAX : s - 1;
    return true;
}

/* In one Forwarded element ("for=1.2.3.4;proto=https"), the value of a parameter. */
static bool
param(pt_span_t el, const char *name, pt_span_t *out)
{
    size_t n = strlen(name);
    const char *p = el.base, *e = el.base + el.len;

    while (p < e) {
        const char *semi = memchr(p, ';', (size_t)(e - p)), *pe = semi ? semi : e;

        while (p < pe && (*p == ' ' || *p == '\t')) {
            p++;
        }
        if ((size_t)(pe - p) > n && strncasecmp(p, name, n) == 0 && p[n] == '=') {
            *out = (pt_span_t){ p + n + 1, (size_t)(pe - p - n - 1) };
            return true;
        }
        p = pe + 1;
    }
    return false;
}

static const char *
scheme_of(pt_span_t v)
{
    pt_span_t s = hop_address(v); /* trims spaces and quotes */

    if (s.len == 5 && strncasecmp(s.base, "https", 5) == 0) {
        return "https";
    }
    if (s.len == 4 && strncasecmp(s.base, "http", 4) == 0) {
        return "http";
    }
    return NULL;
}

bool
pt_forwarded_apply(const pt_trust_t *t, const pt_header_t *hs, size_t n, char *addr, size_t addrlen,
                   const char **scheme)
{
    pt_span_t client = { NULL, 0 };
    const char *proto = NULL;
    bool have_forwarded = false, found = false;
    size_t i;

    if (!pt_trust_has(t, addr)) {
        return false;
    }
    /* Forwarded (RFC 7239) wins over the X- headers when both are present. */
    for (i = 0; i < n && !have_forwarded; i++) {
        have_forwarded = pt_span_ieq(hs[i].name, "forwarded");
    }
    /* Several header lines form one list, in order: walk them from the last. */
    for (i = n; i-- > 0 && !found;) {
        size_t pos = hs[i].value.len;
        pt_span_t item, v;

        if (have_forwarded ? !pt_span_ieq(hs[i].name, "forwarded") : !pt_span_ieq(hs[i].name, "x-forwarded-for")) {
            continue;
        }
        while (!found && prev_item(hs[i].value, &pos, &item)) {
            if (have_forwarded) {
                if (proto == NULL && param(item, "proto", &v)) {
                    proto = scheme_of(v);
                }
                if (!param(item, "for", &v)) {
                    continue;
                }
                item = v;
            }
            client = hop_address(item);
            found = client.len > 0 && !trusted(t, client.base, client.len);
        }
    }
    if (!have_forwarded) {
        for (i = n; i-- > 0 && proto == NULL;) {
            size_t pos = hs[i].value.len;
            pt_span_t item;

            if (pt_span_ieq(hs[i].name, "x-forwarded-proto")) {
                if (prev_item(hs[i].value, &pos, &item)) {
                    proto = scheme_of(item);
                }
            }
        }
    }
    if (client.len > 0 && client.len < addrlen) {
        uint8_t a[16];

        /* Only a real address replaces the peer's ("unknown" and obfuscated identifiers do not). */
        if (parse_addr(client.base, client.len, a) > 0) {
            memcpy(addr, client.base, client.len);
            addr[client.len] = '\0';
        } else {
            client.len = 0;
        }
    }
    if (proto != NULL) {
        *scheme = proto;
    }
    return client.len > 0 || proto != NULL;
}
