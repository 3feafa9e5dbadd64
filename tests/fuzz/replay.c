/*
 * Replays inputs through the fuzz target without libFuzzer (gcc builds, plain and sanitized): every file given, or
 * in a folder given, is one run, reported as a TAP line. The suite replays tests/fuzz/regressions/, every input
 * that ever broke ponte.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int n;

static void
replay(const char *path)
{
    static uint8_t buf[1 << 20];
    FILE *f = fopen(path, "rb");
    size_t len;

    n++;
    if (f == NULL) {
        printf("not ok %d - %s: cannot open\n", n, path);
        return;
    }
    len = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, len); /* aborts on a broken invariant */
    printf("ok %d - %s (%zu bytes)\n", n, path, len);
}

static int
by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

int
main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        struct stat st;
        struct dirent **names;
        int k, count;

        if (stat(argv[i], &st) < 0 || !S_ISDIR(st.st_mode)) {
            replay(argv[i]);
            continue;
        }
        count = scandir(argv[i], &names, NULL, by_name);
        for (k = 0; k < count; k++) {
            char path[4096];

            if (names[k]->d_name[0] != '.') {
                snprintf(path, sizeof(path), "%s/%s", argv[i], names[k]->d_name);
                replay(path);
            }
            free(names[k]);
        }
        free(count > 0 ? names : NULL);
    }
    if (n == 0) {
        printf("not ok 1 - no input to replay\n");
        n = 1;
    }
    printf("1..%d\n", n);
    return 0;
}
