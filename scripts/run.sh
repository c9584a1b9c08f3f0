#!/usr/bin/env bash
# Install dsfw from this checkout and run it in the foreground with the shipped policies.
# Usage (as root, on a machine with Docker or where `apt-get install docker.io` works):
#   bash scripts/run.sh [extra twistd dsfw options, e.g. --verbose]
# Then: DOCKER_HOST=unix:///var/run/protected-docker.sock docker ps
set -euo pipefail
cd "$(dirname "$0")/.."
need=""
command -v dockerd >/dev/null 2>&1 || need="$need docker.io"
python3 -m pip --version >/dev/null 2>&1 || need="$need python3-pip"
if [ -n "$need" ]; then
  apt-get update -qq && apt-get install -y -qq $need
fi
if ! docker -H unix:///var/run/docker.sock info >/dev/null 2>&1; then
  echo "starting dockerd (log: /tmp/dockerd.log)"
  dockerd >/tmp/dockerd.log 2>&1 &
  for _ in $(seq 60); do docker -H unix:///var/run/docker.sock info >/dev/null 2>&1 && break; sleep 1; done
fi
python3 -m pip install -q . 2>/dev/null || python3 -m pip install -q --break-system-packages .
# Run from outside the checkout so the installed package (and its twistd plugin) is what runs.
cd /
exec twistd -n --pidfile= dsfw --policyDir "$OLDPWD/policies" "$@"
