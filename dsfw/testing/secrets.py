"""Docker API requests that carry secrets, each with its own marker, for the redaction tests.

Every request here puts a unique marker where a credential goes (registry
passwords and tokens, swarm join tokens and keys, secret payloads, log and
volume driver options, plugin settings, container and exec ``Env``, build args
and their substitutions, credentials in URLs, registry headers), in the
documented spelling and in the key spellings Go's decoder folds to the same
field (``paſſword``, ``PASSWORD``, ``unloc\\u212aKey``).  Nothing here may
appear in a log line, a recording or ``dsfw eval`` output.

The requests are built to fail at dockerd without changing it (missing
images, containers and plugins; registries at 127.0.0.1:1; invalid driver
options) -- and the swarm, service and plugin-pull ones are meant to be denied
by the test policy (:data:`ALLOW_BUT_SWARM`), so a shared dockerd is never
put into a swarm.
"""
from __future__ import annotations

import base64
import io
import json
import tarfile
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote

NONE = "dsfw-secret-none"  # no container, image or plugin of this name exists

#: Allows everything but state changes a shared dockerd must not see.
ALLOW_BUT_SWARM = """package docker.authz
import rego.v1

default allow := false
allow if not risky
risky if startswith(input.PathPlain, "/swarm/")
risky if startswith(input.PathPlain, "/services/")
risky if startswith(input.PathPlain, "/secrets/")
risky if startswith(input.PathPlain, "/configs/")
risky if startswith(input.PathPlain, "/nodes/")
risky if input.PathPlain == "/plugins/pull"
risky if endswith(input.PathPlain, "/upgrade")
deny contains "swarm and plugin changes are not relayed in this test" if risky
"""
ALLOW_BUILDS = "package docker.build\nimport rego.v1\n\nallow := true\n"

#: Denies everything with messages that quote the input, decoded credentials included.
ECHO_DENY = """package docker.authz
import rego.v1

default allow := false
deny contains sprintf("echo %v", [input])
deny contains sprintf("path %s", [input.Path])
deny contains sprintf("registry auth %v", [json.unmarshal(base64url.decode(h))]) if {
    h := input.Headers["X-Registry-Auth"]
    startswith(h, "ey")
}
deny contains sprintf("registry config %v", [json.unmarshal(base64url.decode(h))]) if {
    h := input.Headers["X-Registry-Config"]
    startswith(h, "ey")
}
deny contains sprintf("basic %s", [base64.decode(a)]) if {
    a := input.Body.auth
    is_string(a)
    not contains(a, "<")  # a recording holds the marker, which is not base64
}
"""
ECHO_DENY_BUILD = """package docker.build
import rego.v1

default allow := false
deny contains sprintf("dockerfile %v", [input.DockerfileParsed])
deny contains sprintf("images %v", [input.ExternalImages])
"""


@dataclass
class SecretRequest:
    """One request: ``target`` is the raw request target, ``body`` raw bytes."""

    name: str
    marker: str
    method: str
    target: str
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    dockerfile: bytes | None = None  # for builds: the context holds this Dockerfile

    def raw(self) -> bytes:
        """The HTTP/1.1 request as bytes, closing the connection after the answer."""
        body = self.body
        if self.dockerfile is not None:
            body = context_tar(self.dockerfile)
        head = [f"{self.method} {self.target} HTTP/1.1", "Host: docker", "Connection: close",
                f"Content-Length: {len(body)}"]
        if self.dockerfile is not None:
            head.append("Content-Type: application/x-tar")
        elif body:
            head.append("Content-Type: application/json")
        head += [f"{k}: {v}" for k, v in self.headers]
        return ("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + body


def context_tar(dockerfile: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    return buf.getvalue()


def _b64json(doc: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


def _q(value: str) -> str:
    return quote(value, safe="")


def secret_requests(prefix: str | None = None) -> list[SecretRequest]:
    """The corpus; markers are ``prefix`` + a number (lower-case, usable in image names)."""
    prefix = prefix or "dsfwsecret" + uuid.uuid4().hex[:8]
    out: list[SecretRequest] = []

    def add(name: str, method: str, target: str, body=None, headers=(), dockerfile=None):
        marker = f"{prefix}n{len(out):02d}"
        fill = (lambda text: text.replace("MARK", marker))
        raw = b"" if body is None else fill(json.dumps(body, ensure_ascii=False)).encode("utf-8")
        # a dict header value is base64url JSON, as registry credentials travel
        headers = [(k, fill(v) if isinstance(v, str) else
                     _b64json(json.loads(fill(json.dumps(v))))) for k, v in headers]
        out.append(SecretRequest(name, marker, method, fill(target), raw, headers,
                                 fill(dockerfile).encode() if dockerfile else None))

    v = "/v1.41"
    add("auth password", "POST", v + "/auth",
        {"username": "u", "password": "MARK", "serveraddress": "127.0.0.1:1"})
    add("auth paſſword", "POST", v + "/auth",
        {"username": "u", "paſſword": "MARK", "serveraddress": "127.0.0.1:1"})
    add("auth PASSWORD", "POST", v + "/auth",
        {"USERNAME": "u", "PASSWORD": "MARK", "SERVERADDRESS": "127.0.0.1:1"})
    add("auth tokens and url", "POST", v + "/auth",
        {"identitytoken": "MARK", "RegistryToken": "MARK",
         "serveraddress": "https://u:MARK@127.0.0.1:1/v2/"})
    add("auth basic", "POST", v + "/auth",
        {"auth": "AUTHB64", "serveraddress": "127.0.0.1:1"})
    add("push with body credentials", "POST", v + f"/images/{NONE}/push",
        {"username": "u", "Password": "MARK"})
    add("swarm init", "POST", v + "/swarm/init", {
        "ListenAddr": "127.0.0.1:1", "Spec": {
            "CAConfig": {"SigningCAKey": "MARK", "SigningCACert": "cert", "ExternalCAs": [
                {"Protocol": "cfssl", "URL": "https://u:MARK@127.0.0.1:1/ca?token=MARK",
                 "Options": {"token": "MARK"}}]},
            "TaskDefaults": {"LogDriver": {"Name": "splunk", "Options": {"splunk-token": "MARK"}}}}})
    add("swarm init folded keys", "POST", v + "/swarm/init",
        {"spec": {"caconfig": {"ſigningCAKey": "MARK"}}})
    add("swarm join", "POST", v + "/swarm/join",
        {"JoinToken": "MARK", "RemoteAddrs": ["127.0.0.1:1"]})
    add("swarm join lower-case", "POST", v + "/swarm/join", {"jointoken": "MARK"})
    add("swarm update", "POST", v + "/swarm/update?version=1&rotateWorkerToken=false",
        {"CAConfig": {"SigningCAKey": "MARK"}, "Labels": {"api-key": "MARK"}})
    add("swarm unlock", "POST", v + "/swarm/unlock", {"UnlockKey": "MARK"})
    add("swarm unlock kelvin", "POST", v + "/swarm/unlock", {"Unloc\u212aKey": "MARK"})
    add("secret create", "POST", v + "/secrets/create", {"Name": NONE, "Data": "MARK"})
    add("secret update", "POST", v + f"/secrets/{NONE}/update?version=1", {"data": "MARK"})
    add("config create", "POST", v + "/configs/create", {"Name": NONE, "Data": "MARK"})
    add("config update", "POST", v + f"/configs/{NONE}/update?version=1", {"DATA": "MARK"})
    add("node update labels", "POST", v + f"/nodes/{NONE}/update?version=1",
        {"Labels": {"registry-password": "MARK"}})
    add("plugin set", "POST", v + f"/plugins/{NONE}/set", ["DEBUG=1", "TOKEN=MARK"])
    add("plugin pull", "POST", v + f"/plugins/pull?remote=127.0.0.1:1/{NONE}:latest&name={NONE}",
        [{"Name": "network", "Value": ["host"]}], headers=[("X-Registry-Auth", "MARK")])
    add("plugin upgrade", "POST", v + f"/plugins/{NONE}/upgrade?remote=127.0.0.1:1/{NONE}",
        [], headers=[("X-Registry-Auth", {"username": "u", "password": "MARK"})])
    add("container create", "POST", v + f"/containers/create?name={NONE}", {
        "Image": NONE, "Env": ["PASS=MARK", "TERM=xterm"],
        "HostConfig": {"LogConfig": {"Type": "splunk", "Config": {"splunk-token": "MARK"}},
                       "Mounts": [{"Type": "volume", "Target": "/x", "VolumeOptions": {
                           "DriverConfig": {"Name": "local", "Options": {
                               "o": "username=u,password=MARK"}}}}]}})
    add("container create folded keys", "POST", v + "/containers/create", {
        "image": NONE, "env": ["PASS=MARK"],
        "hostconfig": {"logconfig": {"type": "splunk", "config": {"splunk-url": "https://u:MARK@h/"}}}})
    add("exec", "POST", v + f"/containers/{NONE}/exec", {"Cmd": ["true"], "Env": ["T=MARK"]})
    add("commit", "POST", v + f"/commit?container={NONE}&changes=" + _q("ENV T=MARK"),
        {"Env": ["T=MARK"]})
    add("import fromSrc user info", "POST",
        v + "/images/create?fromSrc=" + _q("http://u:MARK@127.0.0.1:1/x.tar") + f"&repo={NONE}")
    add("import fromSrc token and changes", "POST",
        v + "/images/create?fromSrc=" + _q("http://127.0.0.1:1/x.tar?token=MARK")
        + "&changes=" + _q('ENV A="MARK b" C=MARK') + f"&repo={NONE}")
    add("pull with registry auth", "POST", v + f"/images/create?fromImage=127.0.0.1:1/{NONE}&tag=x",
        headers=[("X-Registry-Auth", {"username": "u", "password": "MARK"})])
    add("volume create", "POST", v + "/volumes/create", {
        "Name": NONE, "Driver": "local",
        "DriverOpts": {"type": "cifs", "o": "username=u,password=MARK", "bogus": "x"}})
    add("volume create folded keys", "POST", v + "/volumes/create", {
        "name": NONE, "driveropts": {"o": "password=MARK", "bogus": "x"}})
    add("service create", "POST", v + "/services/create", {
        "Name": NONE, "TaskTemplate": {
            "ContainerSpec": {"Image": NONE, "Env": ["T=MARK"],
                              "Secrets": [{"SecretName": "MARK", "SecretID": "MARK"}]},
            "LogDriver": {"Name": "splunk", "Options": {"splunk-token": "MARK"}}}})
    add("build args", "POST", v + "/build?buildargs=" + _q(json.dumps(
        {"IMG": "MARKimg", "TOKEN": "MARK", "OTHER": None})) + f"&t={NONE}:x&forcerm=1",
        headers=[("X-Registry-Config", {"127.0.0.1:1": {"password": "MARK"}})],
        dockerfile="ARG IMG\nFROM 127.0.0.1:1/${IMG}\nARG TOKEN\nENV X=$TOKEN Y=a${TOKEN}b\n"
                   "LABEL l=${TOKEN}\nRUN echo $TOKEN\n")
    add("build remote with credentials", "POST",
        v + "/build?remote=" + _q("https://u:MARK@127.0.0.1:1/r.git?access_token=MARK"))
    add("registry headers, any case", "GET", v + "/images/json",
        headers=[("x-registry-auth", "MARK"), ("Authorization", "Bearer MARK"),
                 ("X-Api-Key", "MARK")])
    add("credentials in any query parameter", "GET",
        v + "/containers/json?x=" + _q("https://u:MARK@h/") + "&token=MARK")
    add("unknown endpoint", "POST", v + f"/{NONE}",
        {"password": "MARK", "nested": {"sEcReT": "MARK", "list": [{"pa\u017f\u017fwd": "MARK"}]},
         "Env": ["A=MARK"]})
    for req in out:  # the basic-auth case holds its marker only inside base64
        if b"AUTHB64" in req.body:
            req.body = req.body.replace(
                b"AUTHB64", base64.b64encode(f"u:{req.marker}".encode()))
    return out
