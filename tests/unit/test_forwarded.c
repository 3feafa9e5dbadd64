/* --forwarded-allow-ips: the trust list and the proxy headers (server/forwarded.c). */
#include <string.h>

#include "forwarded.h"
#include "tap.h"

/* Applies headers "Name: value" (NULL-terminated list) as if from `peer`; returns the client and scheme. */
static const char *
apply(const char *trust, const char *peer, const char *const *lines, const char **scheme)
{
    static char addr[64];
    pt_header_t hs[8];
    pt_trust_t t;
    char why[160];
    size_t n = 0;

    pt_trust_parse(trust, &t, why, sizeof(why));
    for (; lines[n] != NULL; n++) {
        const char *colon = strchr(lines[n], ':');

        hs[n].name = (pt_span_t){ lines[n], (size_t)(colon - lines[n]) };
        hs[n].value = (pt_span_t){ colon + 2, strlen(colon + 2) };
    }
    strcpy(addr, peer);
    *scheme = "http";
    pt_forwarded_apply(&t, hs, n, addr, sizeof(addr), scheme);
    return addr;
}

int
main(void)
{
    pt_trust_t t;
    char why[160];
    const char *scheme;

    CHECK(pt_trust_parse("127.0.0.1, 10.0.0.0/8,::1,unix", &t, why, sizeof(why)) == 0 && t.n == 4, "a list");
    CHECK(pt_trust_has(&t, "10.200.3.4") && !pt_trust_has(&t, "11.0.0.1"), "a network");
    CHECK(pt_trust_has(&t, "::1") && pt_trust_has(&t, "unix") && !pt_trust_has(&t, "::2"), "IPv6 and unix");
    CHECK(pt_trust_parse("10.0.0.0/33", &t, why, sizeof(why)) < 0 && strstr(why, "prefix"), "bad prefix: %s", why);
    CHECK(pt_trust_parse("localhost", &t, why, sizeof(why)) < 0 && strstr(why, "localhost"), "names: %s", why);
    CHECK(pt_trust_parse("*", &t, why, sizeof(why)) == 0 && pt_trust_has(&t, "8.8.8.8"), "* trusts all");
    CHECK(pt_trust_parse("", &t, why, sizeof(why)) == 0 && !pt_trust_has(&t, "127.0.0.1"), "empty trusts none");
    CHECK(pt_trust_parse("192.168.1.0/23", &t, why, sizeof(why)) == 0 && pt_trust_has(&t, "192.168.0.9")
              && !pt_trust_has(&t, "192.168.2.1"),
          "a prefix that is not a whole byte");

    {
        const char *h[] = { "X-Forwarded-For: 203.0.113.7", "X-Forwarded-Proto: https", NULL };

        CHECK(strcmp(apply("127.0.0.1", "127.0.0.1", h, &scheme), "203.0.113.7") == 0 && strcmp(scheme, "https") == 0,
              "a trusted proxy's headers are believed");
        CHECK(strcmp(apply("127.0.0.1", "192.0.2.1", h, &scheme), "192.0.2.1") == 0 && strcmp(scheme, "http") == 0,
              "anyone else's are not");
    }
    {
        const char *h[] = { "X-Forwarded-For: 6.6.6.6, 203.0.113.7, 10.1.2.3", NULL };

        CHECK(strcmp(apply("127.0.0.1,10.0.0.0/8", "127.0.0.1", h, &scheme), "203.0.113.7") == 0,
              "the rightmost untrusted hop: a client cannot forge its way past the proxies");
    }
    {
        const char *h[] = { "X-Forwarded-For: 6.6.6.6", "X-Forwarded-For: 203.0.113.7:5555", NULL };

        CHECK(strcmp(apply("127.0.0.1", "127.0.0.1", h, &scheme), "203.0.113.7") == 0,
              "several lines form one list; a port is dropped");
    }
    {
        const char *h[] = { "Forwarded: for=\"[2001:db8::1]:4711\";proto=https;by=10.0.0.1", "X-Forwarded-For: 9.9.9.9",
                            NULL };

        CHECK(strcmp(apply("::1", "::1", h, &scheme), "2001:db8::1") == 0 && strcmp(scheme, "https") == 0,
              "Forwarded (RFC 7239) wins over X-Forwarded-For");
    }
    {
        const char *h[] = { "Forwarded: for=unknown", NULL };

        CHECK(strcmp(apply("unix", "unix", h, &scheme), "unix") == 0, "an obfuscated client leaves the peer");
    }
    {
        const char *h[] = { "X-Forwarded-Proto: ftp", NULL };

        CHECK(strcmp(apply("*", "127.0.0.1", h, &scheme), "127.0.0.1") == 0 && strcmp(scheme, "http") == 0,
              "only http and https are schemes");
    }
    return tap_done();
}
