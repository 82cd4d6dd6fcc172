/* fdexec FILE FD CMD...: open FILE on fd FD, then execvp CMD (lets hyperfine -N hand
 * bwrap a seccomp filter with --seccomp FD without a shell in the timed command). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: fdexec FILE FD CMD...\n"); return 2; }
  int fd = open(argv[1], O_RDONLY), want = atoi(argv[2]);
  if (fd < 0) { perror(argv[1]); return 1; }
  if (fd != want) { if (dup2(fd, want) < 0) { perror("dup2"); return 1; } close(fd); }
  execvp(argv[3], argv + 3); perror(argv[3]); return 127;
}
