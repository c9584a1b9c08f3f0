#!/usr/bin/env bash
# Make this machine ready for dsfw's Docker end-to-end tests (as root): install dockerd and the
# tools the tests use if they are missing, start dockerd unless one already answers, and import
# the offline test image. Called by scripts/test.sh; safe to run again.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

missing=""
for tool in dockerd busybox socat haproxy; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/bin/$tool" ] || [ -x "/usr/sbin/$tool" ] || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    echo "installing docker.io busybox-static socat haproxy (missing:$missing)" >&2
    apt-get update
    apt-get install -y docker.io busybox-static socat haproxy
fi

if ! docker info >/dev/null 2>&1; then
    dockerd >/tmp/dockerd.log 2>&1 &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
        echo "dockerd did not answer within 60 s; /tmp/dockerd.log:" >&2
        tail -n 50 /tmp/dockerd.log >&2
        exit 1
    fi
fi

# No registry here: the test image is a busybox rootfs made with docker import.
image=${DSFW_TEST_IMAGE:-localbusybox:latest}
if ! docker image inspect "$image" >/dev/null 2>&1; then
    busybox=/bin/busybox
    [ -x "$busybox" ] || busybox=$(command -v busybox)
    rootfs=$(mktemp -d)
    mkdir "$rootfs/bin"
    cp "$busybox" "$rootfs/bin/busybox"
    for tool in sh cat echo sleep ls true false env id; do
        ln -s busybox "$rootfs/bin/$tool"
    done
    tar -C "$rootfs" -c . | docker import - "$image" >/dev/null
    rm -rf "$rootfs"
fi
