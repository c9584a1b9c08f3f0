#!/usr/bin/env bash
# The project's test command (README: `bash scripts/test.sh`), for CI and developers alike.
# Installs dsfw with its test extras into the current python3, then runs every test under
# tests/ with pytest, whose summary line is the last thing printed; exits non-zero on failure.
# Run as root, it first makes the machine ready for the Docker end-to-end tests
# (scripts/setup-docker.sh: installs docker.io busybox-static socat haproxy if missing, starts
# dockerd, imports the test image). Without dockerd those tests skip -- or fail, when CI is set.
# DSFW_SKIP_INSTALL=1 skips the install steps (for an environment already set up).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}

if [ "${DSFW_SKIP_INSTALL:-}" != 1 ] && [ "$(id -u)" = 0 ]; then
    bash scripts/setup-docker.sh >&2
fi

if [ "${DSFW_SKIP_INSTALL:-}" != 1 ]; then
    # A distribution's own python refuses pip installs (PEP 668) outside a virtualenv.
    managed=$("$PYTHON" -c 'import os, sys, sysconfig
print(int(sys.prefix == sys.base_prefix and os.path.exists(
    os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))))')
    if [ "$managed" = 1 ]; then
        if [ -n "${CI:-}" ]; then
            export PIP_BREAK_SYSTEM_PACKAGES=1  # a throwaway CI machine
        else
            echo "scripts/test.sh: $PYTHON is managed by the system; activate a virtualenv," >&2
            echo "or set DSFW_SKIP_INSTALL=1 with dsfw's dependencies already installed." >&2
            exit 2
        fi
    fi
    "$PYTHON" -m pip install --quiet --disable-pip-version-check '.[test]' >&2
fi

# The tests run the checkout (twistd finds the plugin through PYTHONPATH), not the installed copy.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m pytest -q tests
