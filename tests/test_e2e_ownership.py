"""End to end: owner isolation and the label-scoped profile through real clients.

Two callers of different uids (``useradd``; run with ``runuser`` and the real
docker CLI) share one dsfw socket (``--socket-group``) with the library's
ownership.rego; a third is in the exempt group; root drives the Python SDK
as a fourth, non-exempt caller.  What a hidden object looks like to a caller
is compared with what a name that exists nowhere looks like: they must be
the same answers.  Containers are removed on the direct socket at teardown.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from dsfw.testing.e2e import (DOCKER_SOCKET, REPO_ROOT, TEST_IMAGE, docker_cli, policy_dir,
                         require_root, requires_docker, unique_name)

pytestmark = requires_docker

LIBRARY = REPO_ROOT / "policies" / "library"
GROUP = "dsfwe2e"
ADMINS = "dsfwe2eadm"
USERS = {"alice": ("dsfwe2e-alice", GROUP), "bob": ("dsfwe2e-bob", GROUP),
         "admin": ("dsfwe2e-admin", ADMINS)}


def _ensure_users() -> dict[str, int]:
    """The test callers (created once per machine, idempotently); name -> uid."""
    require_root("callers as other uids")
    for group in (GROUP, ADMINS):
        if subprocess.run(["getent", "group", group], capture_output=True).returncode:
            subprocess.run(["groupadd", group], check=True)
    uids = {}
    for who, (name, group) in USERS.items():
        if subprocess.run(["getent", "passwd", name], capture_output=True).returncode:
            extra = ["-G", GROUP] if group != GROUP else []
            subprocess.run(["useradd", "-M", "-N", "-g", group, *extra, name], check=True)
        uids[who] = int(subprocess.run(["id", "-u", name], capture_output=True, text=True,
                                       check=True).stdout)
    return uids


def _library(tmp_path, files: list[str], settings: dict) -> str:
    directory = policy_dir(tmp_path, {})
    for name in files:
        shutil.copy(LIBRARY / name, directory / name)
    (directory / "data.yaml").write_text(json.dumps({"library": {"enabled": True, **settings}}))
    return str(directory)


class Caller:
    """One caller of the shared socket: the docker CLI run as its uid."""

    def __init__(self, user: str, sock: str):
        self.user = user
        self.sock = sock
        self.home = tempfile.mkdtemp(prefix=f"dsfw-home-{user}-")
        os.chmod(self.home, 0o777)

    def docker(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["runuser", "-u", self.user, "--", "env", f"HOME={self.home}",
             f"DOCKER_HOST=unix://{self.sock}", "DOCKER_BUILDKIT=0", "docker", *args],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def owners(dsfw_factory, tmp_path):
    uids = _ensure_users()
    shared = tempfile.mkdtemp(prefix="dsfw-own-")
    os.chmod(shared, 0o755)
    proxy = dsfw_factory(
        _library(tmp_path, ["common.rego", "allow_all.rego", "collect.rego", "ownership.rego"],
                 {"ownership": {"exempt": {"groups": [ADMINS]}}}),
        "--socket-group", GROUP, host=os.path.join(shared, "dsfw.sock"))
    callers = {who: Caller(name, proxy.socket) for who, (name, _) in USERS.items()}
    names: list[str] = []
    yield proxy, callers, uids, names
    for name in names:
        docker_cli(DOCKER_SOCKET, "rm", "-f", name)


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, (proc.args, proc.stdout, proc.stderr)
    return proc.stdout


def _direct_labels(name: str) -> dict:
    out = docker_cli(DOCKER_SOCKET, "inspect", "--format", "{{json .Config.Labels}}", name)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_owner_isolation_through_the_cli(owners):
    proxy, callers, uids, names = owners
    alice, bob, admin = callers["alice"], callers["bob"], callers["admin"]
    mine = unique_name("dsfw-own")
    names.append(mine)
    since = str(int(time.time()) - 1)
    # alice tries to forge bob's ownership: dsfw's stamp wins
    _ok(alice.docker("run", "-d", "--name", mine, "--label", f"dsfw.owner.uid={uids['bob']}",
                     "--label", "dsfw.owner.user=dsfwe2e-bob", "--label", "keep=me",
                     TEST_IMAGE, "sleep", "300"))
    labels = _direct_labels(mine)
    assert labels["dsfw.owner.uid"] == str(uids["alice"])
    assert labels["dsfw.owner.user"] == "dsfwe2e-alice"
    assert labels["keep"] == "me"

    # the owner lists and uses it
    assert mine in _ok(alice.docker("ps", "--format", "{{.Names}}"))
    assert _ok(alice.docker("exec", mine, "echo", "inside")).strip() == "inside"
    _ok(alice.docker("logs", mine))
    _ok(alice.docker("inspect", mine))

    # for bob it does not exist: every answer is the one for a name that exists nowhere
    nowhere = unique_name("dsfw-nowhere")
    assert mine not in _ok(bob.docker("ps", "-a", "--format", "{{.Names}}"))
    for command in (["inspect"], ["exec"], ["logs"], ["rm", "-f"], ["stop"], ["start"],
                    ["container", "inspect"]):
        extra = ["echo", "x"] if command == ["exec"] else []
        hidden = bob.docker(*command, mine, *extra)
        missing = bob.docker(*command, nowhere, *extra)
        assert hidden.returncode == missing.returncode, (command, hidden.stderr)
        assert "No such" in hidden.stderr, (command, hidden.stderr)
        assert hidden.stderr.replace(mine, "X") == missing.stderr.replace(nowhere, "X"), command
        assert hidden.stdout.replace(mine, "X") == missing.stdout.replace(nowhere, "X"), command
    assert "No such container: " + mine in bob.docker("logs", mine).stderr
    # ...and by ID
    cid = docker_cli(DOCKER_SOCKET, "inspect", "-f", "{{.Id}}", mine).stdout.strip()
    assert f"No such container: {cid[:12]}" in bob.docker("stop", cid[:12]).stderr
    assert docker_cli(DOCKER_SOCKET, "inspect", "-f", "{{.State.Running}}", mine).stdout.strip() == "true"

    # the event stream: alice sees her container's events, bob none of them
    until = str(int(time.time()) + 1)
    time.sleep(1.2)
    fmt = "{{.Type}} {{.Actor.Attributes.name}}"
    assert f"container {mine}" in _ok(alice.docker("events", "--since", since, "--until", until,
                                                  "--format", fmt))
    assert mine not in _ok(bob.docker("events", "--since", since, "--until", until, "--format", fmt))

    # the exempt group sees and acts on everything
    assert mine in _ok(admin.docker("ps", "--format", "{{.Names}}"))
    assert mine in _ok(admin.docker("events", "--since", since, "--until", until, "--format", fmt))
    _ok(admin.docker("inspect", mine))

    # docker system df shows the caller's own objects only
    fmt = "{{range .Containers}}{{.Names}} {{end}}"
    assert mine in _ok(alice.docker("system", "df", "-v", "--format", fmt, timeout=180)).split()
    assert mine not in _ok(bob.docker("system", "df", "-v", "--format", fmt, timeout=180)).split()
    assert mine in _ok(admin.docker("system", "df", "-v", "--format", fmt, timeout=180)).split()
    # unscoped actions are refused with a reason, not hidden
    pruned = bob.docker("builder", "prune", "-f")
    assert pruned.returncode != 0 and "pruning the build cache acts on objects of other" in pruned.stderr


def test_prunes_remove_the_callers_own_objects_only(owners):
    proxy, callers, uids, names = owners
    alice, bob = callers["alice"], callers["bob"]
    marker = "dsfw.test=" + unique_name("prune")  # only this test's objects are candidates
    theirs, own = unique_name("dsfw-alice"), unique_name("dsfw-bob")
    names += [theirs, own]
    nets = [unique_name("dsfw-anet"), unique_name("dsfw-bnet")]
    try:
        _ok(alice.docker("create", "--name", theirs, "--label", marker, TEST_IMAGE, "true"))
        _ok(bob.docker("create", "--name", own, "--label", marker, TEST_IMAGE, "true"))
        _ok(alice.docker("network", "create", "--label", marker, nets[0]))
        _ok(bob.docker("network", "create", "--label", marker, nets[1]))
        out = _ok(bob.docker("container", "prune", "-f", "--filter", f"label={marker}"))
        assert docker_cli(DOCKER_SOCKET, "inspect", own).returncode != 0, out
        assert docker_cli(DOCKER_SOCKET, "inspect", theirs).returncode == 0
        _ok(bob.docker("network", "prune", "-f", "--filter", f"label={marker}"))
        assert docker_cli(DOCKER_SOCKET, "network", "inspect", nets[1]).returncode != 0
        assert docker_cli(DOCKER_SOCKET, "network", "inspect", nets[0]).returncode == 0
        # the exempt group prunes everything the client's filter selects
        _ok(callers["admin"].docker("container", "prune", "-f", "--filter", f"label={marker}"))
        assert docker_cli(DOCKER_SOCKET, "inspect", theirs).returncode != 0
    finally:
        for net in nets:
            docker_cli(DOCKER_SOCKET, "network", "rm", net)


def test_volumes_are_owned_too(owners):
    proxy, callers, uids, names = owners
    alice, bob = callers["alice"], callers["bob"]
    volume, nowhere = unique_name("dsfw-vol"), unique_name("dsfw-nowhere")
    try:
        _ok(alice.docker("volume", "create", volume))
        labels = json.loads(docker_cli(DOCKER_SOCKET, "volume", "inspect", "--format",
                                       "{{json .Labels}}", volume).stdout)
        assert labels["dsfw.owner.uid"] == str(uids["alice"])
        assert volume in _ok(alice.docker("volume", "ls", "--format", "{{.Name}}"))
        assert volume not in _ok(bob.docker("volume", "ls", "--format", "{{.Name}}"))
        hidden, missing = bob.docker("volume", "inspect", volume), bob.docker("volume", "inspect", nowhere)
        assert hidden.returncode == missing.returncode != 0
        assert hidden.stderr.replace(volume, "X") == missing.stderr.replace(nowhere, "X")
        mounted = bob.docker("run", "--rm", "-v", f"{volume}:/data", TEST_IMAGE, "true")
        assert mounted.returncode != 0 and f"volume {volume} cannot be mounted" in mounted.stderr
        _ok(alice.docker("run", "--rm", "-v", f"{volume}:/data", TEST_IMAGE, "true"))
    finally:
        docker_cli(DOCKER_SOCKET, "volume", "rm", "-f", volume)


def test_the_sdk_follows_events_without_others_objects(owners):
    docker = pytest.importorskip("docker")
    proxy, callers, uids, names = owners
    alice = callers["alice"]
    client = docker.DockerClient(base_url=f"unix://{proxy.socket}", version="1.41", timeout=30)
    theirs, own = unique_name("dsfw-alice"), unique_name("dsfw-root")
    names += [theirs, own]
    seen: list[str] = []
    stream = client.events(decode=True, filters={"type": "container"})

    def follow():
        for event in stream:
            seen.append(event.get("Actor", {}).get("Attributes", {}).get("name", ""))
            if seen[-1] == own:
                return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    time.sleep(0.5)
    _ok(alice.docker("create", "--name", theirs, TEST_IMAGE, "true"))
    mine = client.containers.create(TEST_IMAGE, ["true"], name=own)
    reader.join(20)
    stream.close()
    assert own in seen and theirs not in seen, seen
    assert mine.labels["dsfw.owner.uid"] == "0"
    listed = [c.name for c in client.containers.list(all=True)]
    assert own in listed and theirs not in listed
    with pytest.raises(docker.errors.NotFound, match=f"No such container: {theirs}"):
        client.containers.get(theirs)
    assert theirs in _ok(alice.docker("ps", "-a", "--format", "{{.Names}}"))
    assert own not in _ok(alice.docker("ps", "-a", "--format", "{{.Names}}"))


def test_a_renamed_name_is_decided_on_its_new_holder(owners):
    """bob's allowed request for "X" never reaches alice's container after the names move."""
    proxy, callers, uids, names = owners
    alice, bob = callers["alice"], callers["bob"]
    shared_name, a, b = unique_name("dsfw-x"), unique_name("dsfw-a"), unique_name("dsfw-b")
    names += [shared_name, a, b]
    _ok(bob.docker("create", "--name", shared_name, TEST_IMAGE, "sleep", "300"))
    _ok(alice.docker("create", "--name", a, TEST_IMAGE, "sleep", "300"))
    _ok(bob.docker("inspect", shared_name))  # bob's identity of the name is now cached
    _ok(bob.docker("rename", shared_name, b))
    _ok(alice.docker("rename", a, shared_name))
    started = bob.docker("start", shared_name)
    assert started.returncode != 0 and f"No such container: {shared_name}" in started.stderr
    state = docker_cli(DOCKER_SOCKET, "inspect", "-f", "{{.State.Status}}", shared_name).stdout
    assert state.strip() == "created"


def test_label_scoped_read_only_profile(dsfw_factory, tmp_path):
    docker = pytest.importorskip("docker")
    marker = unique_name("dsfw-proxy")
    proxy = dsfw_factory(_library(tmp_path, ["common.rego", "labelscope.rego"],
                                  {"labelscope": {"labels": [f"{marker}=yes"]}}))
    shown, hidden = unique_name("dsfw-shown"), unique_name("dsfw-hidden")
    try:
        client = docker.DockerClient(base_url=f"unix://{proxy.socket}", version="1.41", timeout=30)
        seen: list[str] = []
        stream = client.events(decode=True)

        def follow():
            for event in stream:
                seen.append(event.get("Actor", {}).get("Attributes", {}).get("name", ""))
                if seen[-1] == shown and event.get("Action") == "start":
                    return

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        time.sleep(0.5)
        for name, label in ((hidden, "no"), (shown, "yes")):
            assert docker_cli(DOCKER_SOCKET, "run", "-d", "--name", name, "--label",
                              f"{marker}={label}", "-e", "SECRET=s3cret", TEST_IMAGE,
                              "sleep", "300").returncode == 0
        reader.join(20)
        stream.close()
        assert shown in seen and hidden not in seen, seen
        listed = [c.name for c in client.containers.list(all=True)]
        assert shown in listed and hidden not in listed
        attrs = client.api.inspect_container(shown)
        assert "Env" not in attrs["Config"] and attrs["Config"]["Labels"][marker] == "yes"
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(hidden)
        out = docker_cli(proxy.socket, "stop", shown)
        assert out.returncode != 0 and "label-scoped read-only profile" in out.stderr
        assert docker_cli(proxy.socket, "ps", "--format", "{{.Names}}").stdout.split() == [shown]
    finally:
        for name in (shown, hidden):
            docker_cli(DOCKER_SOCKET, "rm", "-f", name)


def test_connect_and_commit_are_judged_on_their_containers(owners):
    """The container named in connect's body and commit's query is resolved like a path's."""
    proxy, callers, uids, names = owners
    alice, bob = callers["alice"], callers["bob"]
    theirs, own, nowhere = unique_name("dsfw-alice"), unique_name("dsfw-bob"), unique_name("dsfw-no")
    names += [theirs, own]
    nets = [unique_name("dsfw-bnet"), unique_name("dsfw-anet")]
    image = unique_name("dsfw-commit") + ":v1"
    try:
        _ok(alice.docker("create", "--name", theirs, TEST_IMAGE, "true"))
        _ok(bob.docker("create", "--name", own, TEST_IMAGE, "true"))
        _ok(bob.docker("network", "create", nets[0]))
        _ok(alice.docker("network", "create", nets[1]))
        _ok(bob.docker("network", "connect", nets[0], own))
        attached = docker_cli(DOCKER_SOCKET, "inspect", "-f", "{{json .NetworkSettings.Networks}}", own)
        assert nets[0] in json.loads(attached.stdout)
        # alice's container and network are missing for bob, with dockerd's words
        hidden, missing = bob.docker("network", "connect", nets[0], theirs), \
            bob.docker("network", "connect", nets[0], nowhere)
        assert f"No such container: {theirs}" in hidden.stderr
        assert hidden.stderr.replace(theirs, "X") == missing.stderr.replace(nowhere, "X")
        hidden = bob.docker("network", "connect", nets[1], own)
        assert hidden.returncode != 0 and f"network {nets[1]} not found" in hidden.stderr
        _ok(bob.docker("network", "disconnect", nets[0], own))
        # commit: bob's container becomes bob's image; alice's is missing
        _ok(bob.docker("commit", own, image))
        labels = json.loads(docker_cli(DOCKER_SOCKET, "image", "inspect", "-f",
                                       "{{json .Config.Labels}}", image).stdout)
        assert labels["dsfw.owner.uid"] == str(uids["bob"])
        committed = bob.docker("commit", theirs, image)
        assert committed.returncode != 0 and f"No such container: {theirs}" in committed.stderr
    finally:
        docker_cli(DOCKER_SOCKET, "rmi", image)
        for name in (own, theirs):
            docker_cli(DOCKER_SOCKET, "rm", "-f", name)
        for net in nets:
            docker_cli(DOCKER_SOCKET, "network", "rm", net)


def _saved_tags(tar_path: str) -> list[str]:
    import tarfile
    with tarfile.open(tar_path) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    return sorted(tag for entry in manifest for tag in entry.get("RepoTags") or ())


def test_save_writes_only_images_the_caller_sees(owners):
    proxy, callers, uids, names = owners
    alice, bob = callers["alice"], callers["bob"]
    source, repo = unique_name("dsfw-alice"), unique_name("dsfw-repo")
    names.append(source)
    owned = unique_name("dsfw-owned") + ":v1"
    out = tempfile.mkdtemp(prefix="dsfw-save-")  # writable by the callers' uids
    os.chmod(out, 0o777)
    try:
        _ok(alice.docker("create", "--name", source, TEST_IMAGE, "true"))
        _ok(alice.docker("commit", source, owned))  # stamped: alice's image
        _ok(docker_cli(DOCKER_SOCKET, "tag", TEST_IMAGE, f"{repo}:a"))
        _ok(docker_cli(DOCKER_SOCKET, "tag", TEST_IMAGE, f"{repo}:b"))
        # a repository name saves every tag of it, as dockerd does: dsfw names each
        _ok(bob.docker("save", "-o", f"{out}/repo.tar", repo))
        assert _saved_tags(f"{out}/repo.tar") == [f"{repo}:a", f"{repo}:b"]
        # alice's image is missing for bob, with dockerd's words; she saves it
        hidden = bob.docker("save", "-o", f"{out}/x.tar", owned)
        missing = bob.docker("save", "-o", f"{out}/y.tar", owned.replace("owned", "nowhere"))
        assert hidden.returncode != 0 and "reference does not exist" in hidden.stderr
        assert hidden.stderr == missing.stderr
        mixed = bob.docker("save", "-o", f"{out}/z.tar", f"{repo}:a", owned)
        assert mixed.returncode != 0 and "reference does not exist" in mixed.stderr
        _ok(alice.docker("save", "-o", f"{out}/own.tar", owned))
        assert _saved_tags(f"{out}/own.tar") == [owned]
    finally:
        for image in (owned, f"{repo}:a", f"{repo}:b"):
            docker_cli(DOCKER_SOCKET, "rmi", image)
        shutil.rmtree(out, ignore_errors=True)


def test_another_callers_volume_is_refused_when_a_container_is_used(owners):
    """The end state of a race at create (bob's volume made after alice's create looked it up
    and found none): alice's container mounts bob's volume. Starting it is refused."""
    proxy, callers, uids, names = owners
    alice, bob = callers["alice"], callers["bob"]
    theirs, own = unique_name("dsfw-bvol"), unique_name("dsfw-avol")
    raced, control = unique_name("dsfw-raced"), unique_name("dsfw-ctl")
    names += [raced, control]
    stamp = ["--label", f"dsfw.owner.uid={uids['alice']}", "--label", "dsfw.owner.user=dsfwe2e-alice"]
    try:
        _ok(bob.docker("volume", "create", theirs, timeout=120))
        _ok(alice.docker("volume", "create", own, timeout=120))
        for name, volume in ((raced, theirs), (control, own)):
            _ok(docker_cli(DOCKER_SOCKET, "create", "--name", name, *stamp, "-v",
                           f"{volume}:/data", TEST_IMAGE, "true"))
        started = alice.docker("start", raced)
        assert started.returncode != 0
        assert f"volume {theirs} cannot be mounted: it is another caller's" in started.stderr
        _ok(alice.docker("start", control))
    finally:
        for name in (raced, control):
            docker_cli(DOCKER_SOCKET, "rm", "-f", name)
        for volume in (theirs, own):
            docker_cli(DOCKER_SOCKET, "volume", "rm", "-f", volume, timeout=120)


def test_a_name_held_by_another_callers_image_cannot_be_taken(owners):
    """bob cannot redirect what alice's `docker run alice-app:1` starts."""
    proxy, callers, uids, names = owners
    alice, bob = callers["alice"], callers["bob"]
    src_a, src_b = unique_name("dsfw-asrc"), unique_name("dsfw-bsrc")
    names += [src_a, src_b]
    app, bobs, fresh = (unique_name(p) + ":1" for p in ("dsfw-aapp", "dsfw-bapp", "dsfw-free"))
    try:
        _ok(alice.docker("create", "--name", src_a, TEST_IMAGE, "true"))
        _ok(bob.docker("create", "--name", src_b, TEST_IMAGE, "true"))
        _ok(alice.docker("commit", src_a, app))
        _ok(bob.docker("commit", src_b, bobs))
        before = docker_cli(DOCKER_SOCKET, "image", "inspect", "-f", "{{.Id}}", app).stdout
        layer = os.path.join(tempfile.mkdtemp(prefix="dsfw-imp-"), "empty.tar")
        subprocess.run(["tar", "-cf", layer, "-T", "/dev/null"], check=True)
        os.chmod(os.path.dirname(layer), 0o755)
        for attempt in (bob.docker("tag", bobs, app), bob.docker("commit", src_b, app),
                        bob.docker("tag", bobs, TEST_IMAGE), bob.docker("import", layer, app),
                        bob.docker("pull", app)):
            assert attempt.returncode != 0 and "is held by an image you cannot change" in attempt.stderr
        assert docker_cli(DOCKER_SOCKET, "image", "inspect", "-f", "{{.Id}}", app).stdout == before
        _ok(bob.docker("tag", bobs, fresh))
        _ok(alice.docker("tag", app, app))  # the same image: nothing taken
    finally:
        for image in (app, bobs, fresh):
            docker_cli(DOCKER_SOCKET, "rmi", image)
