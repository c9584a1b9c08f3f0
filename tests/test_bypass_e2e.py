"""Bypass corpus: ways to hide a privileged container or a bind mount from a policy.

dsfw runs (``twistd -n dsfw``, started by tests/e2e_support.py) on a temporary
socket in front of the real dockerd, with the natural policy a user would write::

    denied if input.Body.HostConfig.Privileged == true
    denied if input.Body.HostConfig.Binds[_]

Each attempt is sent twice as raw bytes: straight to dockerd, to show the
trick is live there (dockerd really creates a privileged container, or one
with binds), and through dsfw.  The verdict is what dockerd *did*: an attempt
dsfw let through is a bypass if ``inspect`` shows ``Privileged`` or ``Binds``.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from dsfw.testing.e2e import DOCKER_SOCKET as DOCKER_SOCK, TEST_IMAGE as IMAGE
from dsfw.testing.e2e import DsfwProcess, dsfw_args, policy_dir
from tests.test_canonical_dockerd import send

pytestmark = pytest.mark.requires_docker

POLICY = """package docker.authz

import rego.v1

default allow := false

allow if not denied

denied if input.Body.HostConfig.Privileged == true

denied if input.Body.HostConfig.Binds[_]

# images come from one registry only
denied if {
	input.PathPlain == "/images/create"
	some image in input.Query.fromImage
	not startswith(image, "registry.example/")
}
"""


@pytest.fixture(scope="module")
def dsfw_sock(tmp_path_factory):
    """One dsfw (tests/e2e_support.py's process) for the whole corpus, with the natural policy."""
    tmp = tmp_path_factory.mktemp("bypass")
    policies = policy_dir(tmp, {"authz.rego": POLICY})
    sock = Path(tempfile.mkdtemp(prefix="dsfw-bypass-")) / "dsfw.sock"  # AF_UNIX path limit
    proc = DsfwProcess(dsfw_args(sock, policies), sock, tmp / "dsfw.log")
    try:
        proc.wait_ready()
        yield proc.socket
    finally:
        proc.stop()
        shutil.rmtree(sock.parent, ignore_errors=True)


def _violation(cid: str) -> list[str]:
    status, data = send(DOCKER_SOCK, "GET", f"/containers/{cid}/json".encode(), None)
    assert status == 200
    hc = json.loads(data)["HostConfig"]
    out = []
    if hc.get("Privileged"):
        out.append("privileged")
    if hc.get("Binds"):
        out.append(f"binds {hc['Binds']}")
    return out


def _remove(cid: str) -> None:
    send(DOCKER_SOCK, "DELETE", f"/containers/{cid}?force=1".encode(), None)


def attempt(sock: str, method: str, target: bytes, body: bytes, chunked=False) -> tuple[int, list]:
    """(status, violations) of one create attempt; the container is removed."""
    status, data = send(sock, method, target, body, chunked)
    if status != 201:
        return status, []
    cid = json.loads(data)["Id"]
    try:
        return status, _violation(cid)
    finally:
        _remove(cid)


def j(obj) -> bytes:
    return json.dumps(obj).encode()


BASE = {"Image": IMAGE, "Cmd": ["true"]}
CREATE = b"/v1.41/containers/create"
BINDS = ["/etc:/mnt/hostetc"]

# (name, target, body, live: dockerd itself creates the forbidden container)
CORPUS = [
    ("documented-privileged", CREATE, j({**BASE, "HostConfig": {"Privileged": True}}), True),
    ("documented-binds", CREATE, j({**BASE, "HostConfig": {"Binds": BINDS}}), True),
    ("lowercase-keys", CREATE, j({"image": IMAGE, "cmd": ["true"], "hostconfig": {"privileged": True}}), True),
    ("uppercase-keys", CREATE, j({**BASE, "HOSTCONFIG": {"BINDS": BINDS}}), True),
    ("long-s-in-HostConfig", CREATE, j({**BASE, "Ho\u017ftConfig": {"Privileged": True}}), True),
    ("long-s-in-Binds", CREATE, j({**BASE, "HostConfig": {"Bind\u017f": BINDS}}), True),
    ("escaped-key", CREATE,
     b'{"Image":"localbusybox:latest","Cmd":["true"],"HostConfig":{"\\u0050rivileged":true}}', True),
    ("legacy-top-level-privileged", CREATE, j({**BASE, "Privileged": True}), True),
    ("legacy-top-level-binds", CREATE, j({**BASE, "Binds": BINDS}), True),
    ("legacy-with-null-HostConfig", CREATE, j({**BASE, "HostConfig": None, "Privileged": True}), True),
    ("legacy-on-old-version", b"/v1.23/containers/create", j({**BASE, "binds": BINDS}), True),
    ("merged-HostConfig-objects", CREATE,
     j({**BASE, "HostConfig": {"Privileged": False}, "hostconfig": {"Binds": BINDS}}), True),
    ("null-then-lowercase-HostConfig", CREATE,
     j({**BASE, "HostConfig": None, "hostconfig": {"Privileged": True}}), True),
    ("exact-duplicate-HostConfig", CREATE,
     b'{"Image":"localbusybox:latest","Cmd":["true"],"HostConfig":{"Privileged":false},'
     b'"HostConfig":{"Privileged":true}}', True),
    ("exact-duplicate-Privileged", CREATE,
     b'{"Image":"localbusybox:latest","Cmd":["true"],"HostConfig":{"Privileged":false,'
     b'"Privileged":true}}', True),
    ("case-duplicate-Privileged", CREATE,
     j({**BASE, "HostConfig": {"Privileged": False, "privileged": True}}), True),
    ("null-Binds-beside-privileged", CREATE,
     j({**BASE, "HostConfig": {"Binds": None, "Privileged": True}}), True),
    ("percent-encoded-path", b"/v1.41/%63ontainers/%63reate",
     j({**BASE, "hostconfig": {"privileged": True}}), True),
    ("zero-padded-version", b"/v01.41/containers/create", j({**BASE, "hostconfig": {"binds": BINDS}}), True),
    ("three-part-version", b"/v1.41.0/containers/create", j({**BASE, "Privileged": True}), True),
    ("no-version", b"/containers/create", j({**BASE, "HOSTCONFIG": {"PRIVILEGED": True}}), True),
    ("trailing-document", CREATE,
     j(BASE) + j({"HostConfig": {"Privileged": True}}), False),
    ("invalid-utf8-in-key", CREATE,
     b'{"Image":"localbusybox:latest","Cmd":["true"],"HostConfig":{"Privileged\xff":true}}', False),
    ("lone-surrogate-in-bind", CREATE,
     b'{"Image":"localbusybox:latest","Cmd":["true"],"HostConfig":{"Binds":["/tmp\\ud800:/x"]}}', True),
    ("unclean-path", b"/v1.41/containers/../containers/create",
     j({**BASE, "hostconfig": {"privileged": True}}), False),
]


# Refused before the policy (400): no single reading exists, or dockerd would
# read text the policy engine cannot hold.  Every other attempt is canonicalized
# and denied by the policy itself (403): the policy saw what dockerd would do.
REFUSED = {"merged-HostConfig-objects", "null-then-lowercase-HostConfig",
           "exact-duplicate-HostConfig", "exact-duplicate-Privileged", "case-duplicate-Privileged",
           "trailing-document", "invalid-utf8-in-key", "lone-surrogate-in-bind", "unclean-path"}


@pytest.mark.parametrize("name,target,body,live", CORPUS, ids=[c[0] for c in CORPUS])
def test_attempt_is_live_on_dockerd_and_stopped_by_dsfw(dsfw_sock, name, target, body, live):
    direct_status, direct = attempt(DOCKER_SOCK, "POST", target, body)
    assert bool(direct) == live, f"dockerd itself: {direct_status} {direct}"
    status, violations = attempt(dsfw_sock, "POST", target, body)
    assert violations == [], f"{name}: dsfw let dockerd create {violations} (status {status})"
    assert status == (400 if name in REFUSED else 403)


def test_chunked_body_is_judged_too(dsfw_sock):
    status, violations = attempt(dsfw_sock, "POST", CREATE,
                                 j({**BASE, "hostconfig": {"privileged": True}}), chunked=True)
    assert (status, violations) in ((400, []), (403, []))


def test_allowed_requests_still_work(dsfw_sock):
    for body in (j(BASE), j({**BASE, "hostconfig": {"Binds": None, "CapAdd": None, "memory": 0}}),
                 j({**BASE, "HostConfig": {"ReadonlyRootfs": True}, "Junk": {"Privileged": True}})):
        status, violations = attempt(dsfw_sock, "POST", CREATE, body)
        assert (status, violations) == (201, [])


def test_legacy_start_body_cannot_add_binds(dsfw_sock):
    """API < 1.24 replaces the HostConfig at start: dsfw shows it to the policy."""
    status, data = send(dsfw_sock, "POST", b"/v1.23/containers/create", j({**BASE, "Cmd": ["sleep", "30"]}))
    assert status == 201
    cid = json.loads(data)["Id"]
    try:
        for body in (j({"Binds": BINDS}), j({"hostconfig": {"binds": BINDS}}),
                     j({"Privileged": True})):
            status, _ = send(dsfw_sock, "POST", f"/v1.23/containers/{cid}/start".encode(), body)
            assert status == 403, body
            assert _violation(cid) == []
    finally:
        _remove(cid)


def test_query_parameters_hidden_in_a_form_body(dsfw_sock):
    """``POST /images/create`` with a form body: dockerd reads ``fromImage`` from the body."""
    form = b"fromImage=nonexistent.invalid/evil&tag=1"
    direct = send(DOCKER_SOCK, "POST", b"/v1.41/images/create", form,
                  content_type="application/x-www-form-urlencoded")
    assert b"nonexistent.invalid" in direct[1]  # dockerd tried to pull what the body named
    status, data = send(dsfw_sock, "POST", b"/v1.41/images/create", form,
                        content_type="application/x-www-form-urlencoded")
    assert b"nonexistent.invalid" not in data, f"dsfw let dockerd pull it: {status} {data[:200]!r}"
    # the policy does deny the same pull when it can see it
    assert send(dsfw_sock, "POST", b"/v1.41/images/create?fromImage=nonexistent.invalid/evil&tag=1",
                b"")[0] == 403
