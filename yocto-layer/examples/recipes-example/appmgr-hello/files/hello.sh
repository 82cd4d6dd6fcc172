#!/bin/sh
# The example app: reports where it runs, from inside the sandbox.
echo "hello from ${APPMGR_APP_ID:-?}: uid $(id -u), $(grep -c . /proc/self/mounts) mounts"
grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status
