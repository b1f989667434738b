/* wc: count the lines, words and bytes of each file named on the command line, like wc(1).
 * With no file it reads stdin. Files are only readable if their directory was given with --dir:
 *     pylucet-wasi --dir . examples/wc.wasm README.md
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

struct counts { unsigned long lines, words, bytes; };

static int count(FILE *f, struct counts *c) {
    char buf[4096];
    size_t n;
    int in_word = 0;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        c->bytes += n;
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)buf[i];
            if (ch == '\n')
                c->lines++;
            if (isspace(ch))
                in_word = 0;
            else if (!in_word) {
                in_word = 1;
                c->words++;
            }
        }
    }
    return ferror(f) ? -1 : 0;
}

static void show(const struct counts *c, const char *name) {
    printf("%7lu %7lu %7lu%s%s\n", c->lines, c->words, c->bytes, name ? " " : "", name ? name : "");
}

int main(int argc, char **argv) {
    struct counts total = {0, 0, 0};
    int status = 0;
    if (argc < 2) {
        struct counts c = {0, 0, 0};
        if (count(stdin, &c) != 0) {
            fprintf(stderr, "wc: stdin: %s\n", strerror(errno));
            return 1;
        }
        show(&c, NULL);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        struct counts c = {0, 0, 0};
        FILE *f = fopen(argv[i], "rb");
        if (f == NULL) {
            fprintf(stderr, "wc: %s: %s\n", argv[i], strerror(errno));
            status = 1;
            continue;
        }
        if (count(f, &c) != 0) {
            fprintf(stderr, "wc: %s: %s\n", argv[i], strerror(errno));
            status = 1;
        }
        fclose(f);
        show(&c, argv[i]);
        total.lines += c.lines;
        total.words += c.words;
        total.bytes += c.bytes;
    }
    if (argc > 2)
        show(&total, "total");
    return status;
}
