/* A minimal TAP producer for the C unit tests: meson counts every check. */
#ifndef PT_TAP_H
#define PT_TAP_H

#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        int tap_ok_ = (cond) ? 1 : 0; /* evaluated once: cond may have effects */ \
        ++tap_n;                                                                  \
        if (tap_ok_) {                                                            \
            printf("ok %d - ", tap_n);                                            \
        } else {                                                                  \
            tap_failed++;                                                         \
            printf("not ok %d - ", tap_n);                                        \
        }                                                                         \
        printf(__VA_ARGS__);                                                      \
        printf("\n");                                                             \
        if (!tap_ok_) {                                                           \
            printf("#   %s:%d: %s\n", __FILE__, __LINE__, #cond);                 \
        }                                                                         \
    } while (0)

#define CHECK_MEM(buf, len, lit, ...) CHECK((len) == sizeof(lit) - 1 && memcmp((buf), (lit), (len)) == 0, __VA_ARGS__)

static inline int
tap_done(void)
{
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}

#endif
