/* Every way out of a preopened directory, and the edge cases of path resolution, through the
 * raw preview1 calls (Debian's 2022 wasi-libc: strings are C strings), printing each errno.
 * Run with a directory "box" (holding a file "f" and a directory "sub", beside a file "x")
 * preopened as "box"; tests/guests/wasi_escapes.stdout is what it prints. */
#include <stdio.h>
#include <string.h>
#include <wasi/api.h>
static const int fd = 3;                /* box, the first preopen */
static void op(const char *p, int follow) {
    __wasi_fd_t out;
    __wasi_errno_t e = __wasi_path_open(fd, follow, p, 0, __WASI_RIGHTS_FD_READ, 0, 0, &out);
    printf("open %-22s follow=%d -> %d\n", p, follow, e);
    if (!e) __wasi_fd_close(out);
}
int main(void) {
    const char *paths[] = {"../x", "/etc/passwd", "sub/../../x", "..", "sub/..", "", ".", "f/", "f",
                           "lnout", "lnabs", "lnback", "sub/lnup", "loop1", "dangle", "sub/", "nope/x", "f/x"};
    __wasi_path_symlink("../x", fd, "lnout");
    printf("symlink abs -> %d\n", __wasi_path_symlink("/etc/passwd", fd, "lnabs"));
    __wasi_path_symlink("../box/f", fd, "lnback");
    __wasi_path_symlink("../f", fd, "sub/lnup");
    __wasi_path_symlink("loop2", fd, "loop1");
    __wasi_path_symlink("loop1", fd, "loop2");
    __wasi_path_symlink("nothing", fd, "dangle");
    for (unsigned i = 0; i < sizeof paths / sizeof *paths; i++) { op(paths[i], 1); op(paths[i], 0); }
    printf("rename out -> %d\n", __wasi_path_rename(fd, "f", fd, "../stolen"));
    printf("rename in -> %d\n", __wasi_path_rename(fd, "../x", fd, "g"));
    printf("rename abs -> %d\n", __wasi_path_rename(fd, "f", fd, "/tmp/s"));
    printf("link out -> %d\n", __wasi_path_link(fd, 0, "f", fd, "../stolen"));
    printf("link follow lnout -> %d\n", __wasi_path_link(fd, 1, "lnout", fd, "h"));
    printf("mkdir out -> %d\n", __wasi_path_create_directory(fd, "../d"));
    printf("mkdir lnout/ -> %d\n", __wasi_path_create_directory(fd, "lnout/"));
    printf("rmdir .. -> %d\n", __wasi_path_remove_directory(fd, ".."));
    printf("rmdir . -> %d\n", __wasi_path_remove_directory(fd, "."));
    printf("unlink ../x -> %d\n", __wasi_path_unlink_file(fd, "../x"));
    printf("unlink sub/ -> %d\n", __wasi_path_unlink_file(fd, "sub/"));
    printf("unlink sub -> %d\n", __wasi_path_unlink_file(fd, "sub"));
    printf("rmdir f -> %d\n", __wasi_path_remove_directory(fd, "f"));
    printf("rmdir f/ -> %d\n", __wasi_path_remove_directory(fd, "f/"));
    __wasi_filestat_t st;
    printf("stat lnout follow -> %d\n", __wasi_path_filestat_get(fd, 1, "lnout", &st));
    printf("stat lnout nofollow -> %d\n", __wasi_path_filestat_get(fd, 0, "lnout", &st));
    printf("stat ../x -> %d\n", __wasi_path_filestat_get(fd, 0, "../x", &st));
    printf("stat empty -> %d\n", __wasi_path_filestat_get(fd, 0, "", &st));
    printf("times lnout follow -> %d\n", __wasi_path_filestat_set_times(fd, 1, "lnout", 0, 0, __WASI_FSTFLAGS_MTIM_NOW));
    char buf[64]; __wasi_size_t n;
    printf("readlink ../x -> %d\n", __wasi_path_readlink(fd, "../x", (uint8_t*)buf, 64, &n));
    printf("readlink f -> %d\n", __wasi_path_readlink(fd, "f", (uint8_t*)buf, 64, &n));
    printf("symlink at ../y -> %d\n", __wasi_path_symlink("f", fd, "../y"));
    printf("mkdir exists -> %d\n", __wasi_path_create_directory(fd, "sub"));
    printf("mkdir sub/ exists -> %d\n", __wasi_path_create_directory(fd, "sub/"));
    printf("mkdir new/ -> %d\n", __wasi_path_create_directory(fd, "new/"));
    printf("rename dir to file -> %d\n", __wasi_path_rename(fd, "new", fd, "f"));
    printf("rename file to dir -> %d\n", __wasi_path_rename(fd, "f", fd, "new"));
    printf("rename . -> %d\n", __wasi_path_rename(fd, ".", fd, "zz"));
    printf("symlink exists -> %d\n", __wasi_path_symlink("f", fd, "f"));
    printf("link exists -> %d\n", __wasi_path_link(fd, 0, "f", fd, "sub"));
    printf("link dir -> %d\n", __wasi_path_link(fd, 0, "sub", fd, "sub2"));
    return 0;
}
