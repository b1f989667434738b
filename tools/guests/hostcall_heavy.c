/* A hostcall-heavy WASI program for tools/bench_wasi.py.
 *   hostcall_heavy write N     N small write(2)s of a short line to stdout (N fd_write calls)
 *   hostcall_heavy readdir D   create 1000 files in D, then list D with readdir (fd_readdir
 *                              across many calls, through a small buffer) and print the count
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "write") == 0) {
        long n = atol(argv[2]);
        const char line[] = "a short line of output\n";
        for (long i = 0; i < n; i++) {
            if (write(1, line, sizeof line - 1) != sizeof line - 1) return 2;
        }
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "readdir") == 0) {
        char path[512];
        for (int i = 0; i < 1000; i++) {
            snprintf(path, sizeof path, "%s/file-%04d", argv[2], i);
            int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd < 0) return 3;
            close(fd);
        }
        DIR *d = opendir(argv[2]);
        if (!d) return 4;
        int count = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) count++;
        closedir(d);
        printf("%d\n", count);
        return 0;
    }
    fprintf(stderr, "usage: %s write N | readdir DIR\n", argv[0]);
    return 1;
}
