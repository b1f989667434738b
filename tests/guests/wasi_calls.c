/* A C program (wasi-libc) that drives most of WASI preview1 through libc, printing only
 * what is the same on every run and every runtime, so its output can be compared byte for
 * byte with `wasmtime run`. Run with the directory to work in preopened as "work". */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int check(const char *what, int rc) {
    printf("%-28s %s\n", what, rc < 0 ? strerror(errno) : "ok");
    return rc;
}

static const char *kind(mode_t m) {
    return S_ISDIR(m) ? "dir" : S_ISREG(m) ? "file" : S_ISLNK(m) ? "link" : "other";
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void list(const char *path) {
    DIR *d = opendir(path);
    if (!d) { printf("opendir %s: %s\n", path, strerror(errno)); return; }
    char *names[256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256)
        names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, n, sizeof *names, by_name);
    printf("%s:", path);
    for (int i = 0; i < n; i++) { printf(" %s", names[i]); free(names[i]); }
    printf("\n");
}

int main(int argc, char **argv) {
    printf("argc %d:", argc);
    for (int i = 1; i < argc; i++) printf(" [%s]", argv[i]);
    printf("\nGREETING=%s\n", getenv("GREETING") ? getenv("GREETING") : "(unset)");

    check("mkdir work/a", mkdir("work/a", 0755));
    check("mkdir work/a again", mkdir("work/a", 0755));
    int fd = check("open work/a/f creat", open("work/a/f", O_CREAT | O_RDWR | O_TRUNC, 0644));
    printf("write %zd\n", write(fd, "hello, world\n", 13));
    char buf[64] = {0};
    printf("pread %zd [%.5s]\n", pread(fd, buf, 5, 7), buf);
    printf("pwrite %zd\n", pwrite(fd, "W", 1, 7));
    printf("lseek end %lld, cur %lld\n", (long long)lseek(fd, 0, SEEK_END),
           (long long)lseek(fd, 0, SEEK_CUR));
    check("ftruncate 5", ftruncate(fd, 5));
    struct stat st;
    check("fstat", fstat(fd, &st));
    printf("size %lld kind %s nlink %d\n", (long long)st.st_size, kind(st.st_mode),
           (int)st.st_nlink);
    check("fsync", fsync(fd));
    check("fcntl append", fcntl(fd, F_SETFL, O_APPEND));
    lseek(fd, 0, SEEK_SET);
    write(fd, "!", 1);
    lseek(fd, 0, SEEK_SET);
    memset(buf, 0, sizeof buf);
    printf("read %zd [%s]\n", read(fd, buf, sizeof buf - 1), buf);
    printf("fcntl getfl append %d\n", (fcntl(fd, F_GETFL) & O_APPEND) != 0);
    close(fd);

    check("link f g", link("work/a/f", "work/a/g"));
    check("stat g", stat("work/a/g", &st));
    printf("g nlink %d\n", (int)st.st_nlink);
    check("symlink f -> s", symlink("f", "work/a/s"));
    memset(buf, 0, sizeof buf);
    printf("readlink s %zd [%s]\n", readlink("work/a/s", buf, sizeof buf - 1), buf);
    check("lstat s", lstat("work/a/s", &st));
    printf("s kind %s\n", kind(st.st_mode));
    check("stat s", stat("work/a/s", &st));
    printf("s -> kind %s size %lld\n", kind(st.st_mode), (long long)st.st_size);
    check("symlink out", symlink("../../..", "work/a/out"));
    check("open through out", open("work/a/out/etc/passwd", O_RDONLY));
    check("open ../", open("work/../x", O_RDONLY));
    check("open missing", open("work/nope", O_RDONLY));
    check("rename f -> b/f", rename("work/a/f", "work/b/f"));
    check("mkdir work/b", mkdir("work/b", 0755));
    check("rename f -> b/f", rename("work/a/f", "work/b/f"));
    check("rmdir a (not empty)", rmdir("work/a"));
    check("unlink a (a dir)", unlink("work/a"));

    struct timespec times[2] = {{1000000000, 5}, {1500000000, 7}};
    check("utimensat g", utimensat(AT_FDCWD, "work/a/g", times, 0));
    check("stat g", stat("work/a/g", &st));
    printf("g atime %lld.%09ld mtime %lld.%09ld\n", (long long)st.st_atim.tv_sec,
           st.st_atim.tv_nsec, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    list("work");
    list("work/a");

    check("unlink s", unlink("work/a/s"));
    check("unlink out", unlink("work/a/out"));
    check("unlink g", unlink("work/a/g"));
    check("rmdir a", rmdir("work/a"));
    list("work");

    struct timespec t0, t1, res;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct timespec nap = {0, 2000000};
    check("nanosleep 2ms", nanosleep(&nap, NULL));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long ns = (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    printf("slept at least 2ms %d\n", ns >= 2000000);
    check("clock_getres realtime", clock_getres(CLOCK_REALTIME, &res));
    clock_gettime(CLOCK_REALTIME, &t0);
    printf("realtime after 2020 %d\n", t0.tv_sec > 1577836800);
    unsigned char r[32] = {0};
    check("getentropy", getentropy(r, sizeof r));
    int nonzero = 0;
    for (int i = 0; i < 32; i++) nonzero |= r[i];
    printf("random nonzero %d\n", nonzero != 0);
    struct pollfd p = {.fd = 1, .events = POLLOUT};
    printf("poll stdout %d revents-out %d\n", poll(&p, 1, 0), (p.revents & POLLOUT) != 0);
    fflush(stdout);
    exit(3);
}
