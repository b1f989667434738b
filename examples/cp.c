/* cp: copy SOURCE to DEST, like cp(1) for one file. Both must lie in a directory given with --dir:
 *     pylucet-wasi --dir /tmp examples/cp.wasm /tmp/a.txt /tmp/b.txt
 * Exit status 1 and a message on stderr when either file cannot be opened, read or written.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s SOURCE DEST\n", argc > 0 ? argv[0] : "cp");
        return 2;
    }
    FILE *in = fopen(argv[1], "rb");
    if (in == NULL) {
        fprintf(stderr, "cp: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    FILE *out = fopen(argv[2], "wb");
    if (out == NULL) {
        fprintf(stderr, "cp: %s: %s\n", argv[2], strerror(errno));
        fclose(in);
        return 1;
    }
    static char buf[65536];   /* static: wasm-ld gives the C stack only 64 KiB */
    size_t n;
    int status = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        if (fwrite(buf, 1, n, out) != n) {
            fprintf(stderr, "cp: %s: %s\n", argv[2], strerror(errno));
            status = 1;
            break;
        }
    }
    if (ferror(in)) {
        fprintf(stderr, "cp: %s: %s\n", argv[1], strerror(errno));
        status = 1;
    }
    fclose(in);
    if (fclose(out) != 0 && status == 0) {
        fprintf(stderr, "cp: %s: %s\n", argv[2], strerror(errno));
        status = 1;
    }
    return status;
}
