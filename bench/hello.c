/* Trivial dynamically linked app: prints "hello"; with an argument, stays alive that
 * many seconds (for the helper-process memory measurement). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
  puts("hello");
  fflush(stdout);
  if (argc > 1) sleep((unsigned)atoi(argv[1]));
  return 0;
}
