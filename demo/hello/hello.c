/* The demo app: a dynamically linked C program, so it really needs the runtime's libc at
 * /usr. It reports who and where it runs, so the demo shows the sandbox from inside. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <dirent.h>
#include <string.h>

static void show_file_line(const char *path, const char *prefix) {
    FILE *f = fopen(path, "r");
    char line[256];
    if (!f) return;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, prefix, strlen(prefix)) == 0) fputs(line, stdout);
    fclose(f);
}

int main(int argc, char **argv) {
    printf("hello from %s (version %s)\n", getenv("APPMGR_APP_ID") ? getenv("APPMGR_APP_ID") : "?", APP_VERSION);
    printf("uid=%d gid=%d pid=%d HOME=%s\n", (int)getuid(), (int)getgid(), (int)getpid(),
           getenv("HOME") ? getenv("HOME") : "(unset)");
    show_file_line("/proc/self/status", "CapEff");
    show_file_line("/proc/self/status", "NoNewPrivs");
    show_file_line("/proc/self/status", "Seccomp:");
    DIR *d = opendir("/proc");
    int procs = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] >= '0' && e->d_name[0] <= '9') procs++;
    if (d) closedir(d);
    printf("processes visible: %d\n", procs);
    for (int i = 1; i < argc; i++) printf("arg[%d]=%s\n", i, argv[i]);
    return 0;
}
