# shellcheck shell=bash
# An OCI registry on the host for the scenarios that declare "# needs: registry"
# (95-remote-update): Debian's docker-registry on 127.0.0.1 at a free port, its
# data in out/latest/registry/, started once before the first boot and stopped
# when the run ends (the EXIT trap of qemu-tests/run). It outlives the boots of a
# power-cut run, so what a setup boot published is there in every cut boot.
#
# Such a scenario's guest gets a user-mode NIC (everything else keeps -nic none)
# that reaches this registry and nothing else: restrict=on isolates the guest
# from the host and the outside, and one guestfwd rule connects the guest's
# 10.0.2.100:5000 to it. The rule spawns a relay per connection ("cmd:", the
# host's busybox nc): a chardev target ("tcp:HOST:PORT") is a single
# connection made when qemu starts, which HTTP clients opening several
# connections cannot share.

# The guest's view (guest/lib.sh QT_REGISTRY must match); slirp's network is
# 10.0.2.0/24 with the guest at 10.0.2.15.
REGISTRY_GUEST_ADDR=10.0.2.100
REGISTRY_GUEST_PORT=5000
REGISTRY_PORT=
REGISTRY_RELAY=
REGISTRY_PID=
REGISTRY_OWNER=

# scenario_net NAME: "registry" when NAME needs the registry, else "none".
scenario_net() {
	case " $(scenario_needs "$1") " in *" registry "*) echo registry ;; *) echo none ;; esac
}

# registry_needed: does a selected scenario of one of the selected arches need it?
registry_needed() {
	local a
	for a in "${ARCHES[@]}"; do
		scenarios_need registry "$a" && return 0
	done
	return 1
}

# qemu_nic_argv NET: qemu's NIC arguments for NET (none | registry) -> NIC_ARGV
qemu_nic_argv() {
	case $1 in
	none) NIC_ARGV=(-nic none) ;;
	registry)
		[ -n "$REGISTRY_PORT" ] || die "a scenario needs the registry, but none was started"
		NIC_ARGV=(-nic "user,model=virtio-net-pci,restrict=on,guestfwd=tcp:$REGISTRY_GUEST_ADDR:$REGISTRY_GUEST_PORT-cmd:$REGISTRY_RELAY nc 127.0.0.1 $REGISTRY_PORT")
		;;
	*) die "unknown guest network '$1'" ;;
	esac
}

# free_port: a TCP port on 127.0.0.1 nobody listens on (the kernel's pick).
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# registry_answers: GET /v2/ is 200 (the API's version check), over bash's /dev/tcp.
registry_answers() (
	exec 9<>"/dev/tcp/127.0.0.1/$REGISTRY_PORT" || exit 1
	printf 'GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&9
	read -r -t 5 line <&9 || exit 1
	case $line in "HTTP/1."[01]" 200"*) exit 0 ;; esac
	exit 1
) 2>/dev/null

start_registry() {
	local exe=/usr/bin/docker-registry d=$RUN_OUT/registry i
	step "registry for the guests (needs: registry)"
	[ -x "$exe" ] || die "$exe is missing (Debian's docker-registry; scripts/install-deps, or drop --skip-deps)"
	REGISTRY_RELAY=$(command -v busybox) || die "busybox is missing on the host (busybox-static): the guests' registry relay"
	"$REGISTRY_RELAY" nc --help 2>&1 | grep -q '^Usage: nc' || die "$REGISTRY_RELAY has no nc applet (the guests' registry relay)"
	mkdir -p "$d/data"
	REGISTRY_PORT=$(free_port) || die "no free port for the registry (python3)"
	cat >"$d/config.yml" <<-EOF
		version: 0.1
		log:
		  level: info
		storage:
		  filesystem:
		    rootdirectory: $d/data
		  delete:
		    enabled: true
		http:
		  addr: 127.0.0.1:$REGISTRY_PORT
	EOF
	"$exe" serve "$d/config.yml" >"$d/registry.log" 2>&1 &
	REGISTRY_PID=$!
	REGISTRY_OWNER=$BASHPID
	for ((i = 0; i < 100; i++)); do
		registry_answers && break
		kill -0 "$REGISTRY_PID" 2>/dev/null || { tail -n 20 "$d/registry.log" >&2; die "docker-registry exited at start (log: $d/registry.log)"; }
		sleep 0.1
	done
	registry_answers || { tail -n 20 "$d/registry.log" >&2; die "docker-registry did not answer on 127.0.0.1:$REGISTRY_PORT within 10 s (log: $d/registry.log)"; }
	info "docker-registry (pid $REGISTRY_PID) on 127.0.0.1:$REGISTRY_PORT, data and log in $d; guests reach it at $REGISTRY_GUEST_ADDR:$REGISTRY_GUEST_PORT"
}

# stop_registry: from the EXIT trap; only the shell that started it stops it.
stop_registry() {
	[ -n "$REGISTRY_PID" ] && [ "$REGISTRY_OWNER" = "$BASHPID" ] || return 0
	kill "$REGISTRY_PID" 2>/dev/null || true
	wait "$REGISTRY_PID" 2>/dev/null || true
	REGISTRY_PID=
}
