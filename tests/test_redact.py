"""dsfw.input.redact: what leaves dsfw of a policy input holds no secret, by meaning not spelling."""
from __future__ import annotations

import base64
import copy
import json

import pytest
from hypothesis import given, strategies as st

from dsfw.cli.eval import build_fields, request_input
from dsfw.input.redact import (MARK, MIN_SCRUB, may_name_credential, redacted_input, redacted_query, scrub,
                               scrub_messages, secret_values)
from dsfw.testing.secrets import context_tar, secret_requests

CORPUS = secret_requests("unitsecret")


def input_of(case) -> dict:
    """The input document dsfw builds for a corpus request (build fields included)."""
    doc, req = request_input(case.method, case.target, case.body,
                             [f"{k}:{v}" for k, v in case.headers])
    if case.dockerfile is not None:
        doc = {**doc, **build_fields(req, case.dockerfile)}
    return doc


def decoded_credentials(doc) -> str:
    """What a policy can decode from base64 credentials (registry headers, ``auth`` fields)."""
    out = []
    for name in ("X-Registry-Auth", "X-Registry-Config"):
        value = doc["Headers"].get(name, "")
        if value.startswith("ey"):
            out.append(base64.urlsafe_b64decode(value).decode())
    body = doc.get("Body")
    if isinstance(body, dict) and isinstance(body.get("auth"), str):
        out.append(base64.b64decode(body["auth"]).decode())
    return " ".join(out)


def text_of(value) -> str:
    return json.dumps(value, ensure_ascii=False) + json.dumps(value)


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_no_marker_in_the_redacted_input(case):
    doc = input_of(case)
    before = copy.deepcopy(doc)
    shown = redacted_input(doc)
    assert case.marker not in text_of(shown)
    assert doc == before  # the policy's input is untouched
    assert MARK in text_of(shown)


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_a_message_quoting_the_whole_input_loses_every_secret(case):
    """What an echoing deny message or engine error could say, scrubbed."""
    doc = input_of(case)
    secrets = secret_values(doc)
    echo = "denied: " + text_of(doc) + " " + repr(doc) + decoded_credentials(doc)
    assert case.marker in echo
    assert case.marker not in scrub(echo, secrets)
    assert case.marker not in scrub_messages(doc, [echo])[0]


def test_names_and_harmless_fields_stay():
    doc = input_of(next(c for c in CORPUS if c.name == "container create"))
    body = redacted_input(doc)["Body"]
    assert body["Image"] == doc["Body"]["Image"]
    assert body["Env"] == ["PASS=<redacted>", "TERM=<redacted>"]
    assert body["HostConfig"]["LogConfig"] == {"Type": "splunk",
                                               "Config": {"splunk-token": MARK}}
    options = body["HostConfig"]["Mounts"][0]["VolumeOptions"]["DriverConfig"]["Options"]
    assert options == {"o": f"username=u,password={MARK}"}  # mount options stay readable
    doc, _ = request_input("POST", "/v1.41/containers/x/exec",
                           json.dumps({"Cmd": ["sh"], "DetachKeys": "ctrl-x",
                                       "Env": ["NOVALUE"]}).encode())
    assert redacted_input(doc)["Body"] == {"DetachKeys": "ctrl-x", "Env": ["NOVALUE"],
                                           "Cmd": ["sh"]}


def test_build_args_masked_wherever_the_dockerfile_substitutes_them():
    case = next(c for c in CORPUS if c.name == "build args")
    doc = input_of(case)
    assert case.marker in json.dumps(doc["DockerfileParsed"])  # the policy sees the values
    shown = redacted_input(doc)
    parsed = shown["DockerfileParsed"]
    assert shown["Query"]["buildargs"] == ['{"IMG":"<redacted>","TOKEN":"<redacted>","OTHER":null}']
    assert [(a["Name"], a["Value"]) for a in parsed["MetaArgs"]] == [("IMG", MARK)]
    args = {i["Cmd"]: i["Args"] for i in parsed["Instructions"]}
    assert args["FROM"] == [f"127.0.0.1:1/{MARK}"]
    assert args["ARG"] == [f"TOKEN={MARK}"]
    assert args["ENV"] == [f"X={MARK}", f"Y=a{MARK}b"]
    assert args["LABEL"] == [f"l={MARK}"]
    assert shown["ExternalImages"] == [f"127.0.0.1:1/{MARK}"]
    assert shown["DockerfileRaw"] == doc["DockerfileRaw"]  # the text names variables, not values
    # The canonical steps have the FROM image expanded, and RUN commands their values: masked.
    assert f"FROM 127.0.0.1:1/{MARK}" in shown["Dockerfile"]
    assert case.marker in json.dumps(doc["RunCommands"] + doc["Dockerfile"])
    assert case.marker not in json.dumps(shown)


def test_build_arg_values_are_cut_out_even_when_the_dockerfile_no_longer_parses():
    doc, req = request_input("POST", "/build?buildargs=" + '{"T":"tok-value-1"}', b"")
    doc = {**doc, **build_fields(req, b"FROM busybox\nARG T\nENV A=$T\n")}
    doc["Dockerfile"] = ["FROM busybox", "NOTANINSTRUCTION"]  # e.g. a hand-edited recording
    assert "tok-value-1" not in text_of(redacted_input(doc))


@given(st.lists(st.sampled_from([str.upper, str.lower, lambda c: c]), min_size=9, max_size=9),
       st.booleans(), st.booleans())
def test_any_key_spelling_go_folds_to_password_is_masked(cases, long_s, kelvin):
    name = "".join(f(c) for f, c in zip(cases, "password"))
    if long_s:
        name = name.replace("s", "\u017f", 1).replace("S", "\u017f", 1)
    doc, _ = request_input("POST", "/v1.41/auth",
                           json.dumps({name: "pw-marker-1", "username": "u"}).encode())
    assert "pw-marker-1" not in text_of(redacted_input(doc))
    key = "Unloc\u212aKey" if kelvin else "".join(f(c) for f, c in zip(cases, "unlockkey"))
    doc, _ = request_input("POST", "/v1.41/swarm/unlock", json.dumps({key: "uk-marker"}).encode())
    assert "uk-marker" not in text_of(redacted_input(doc))


@pytest.mark.parametrize("name", ["password", "X-Auth-Token", "api_key", "PRIVATE_KEY",
                                  "db-passwd", "pa\u017f\u017fword", "\u212aey", "client_secret",
                                  "sig", "paſsphrase", "p\u0430ssword", "credentials",
                                  "tls-cert", "Cookie", "session_id"])
def test_names_that_may_be_credentials(name):
    assert may_name_credential(name)


@pytest.mark.parametrize("name", ["Image", "Labels", "com.example.team", "Env", "Cmd",
                                  "DetachKeys", "NodeCertExpiry", "rotateWorkerToken",
                                  "StopSignal", "Privileged", "User-Agent", "Content-Type"])
def test_names_that_cannot_be_credentials(name):
    assert not may_name_credential(name)


def test_unknown_fields_kept_only_when_their_names_cannot_be_credentials():
    doc, _ = request_input("POST", "/v1.41/swarm/join", json.dumps({
        "ListenAddr": "0.0.0.0:2377", "Api_Key": "k-value-1", "Extra": {"Token": "t-value-1"},
        "Availability": "active"}).encode())
    body = redacted_input(doc)["Body"]
    assert body == {"ListenAddr": "0.0.0.0:2377", "Api_Key": MARK, "Extra": {"Token": MARK},
                    "Availability": "active"}


@pytest.mark.parametrize("value, shown", [
    ("https://user:pw1@example.com/ctx.tar", f"https://{MARK}@example.com/ctx.tar"),
    ("https://example.com/ctx.tar?X-Amz-Signature=abc&X-Amz-Credential=def",
     f"https://example.com/ctx.tar?{MARK}"),
    ("git@github.com:org/repo.git#main:dir", f"{MARK}@github.com:org/repo.git#main:dir"),
    ("tok3n-value@github.com/org/repo.git", f"{MARK}@github.com/org/repo.git"),
    ("https://u:p@ss@host/x", f"https://{MARK}@host/x"),
    ("github.com/org/repo", "github.com/org/repo"),
])
def test_credentials_in_remote_urls(value, shown):
    doc, _ = request_input("POST", "/v1.41/build?remote=" + value.replace("#", "%23")
                           .replace("&", "%26").replace("?", "%3F"), b"")
    assert redacted_input(doc)["Query"]["remote"] == [shown]
    assert redacted_query(doc)["remote"] == [shown]


def test_path_and_query_agree():
    doc, _ = request_input("POST", "/v1.41/images/create?fromSrc=http%3A%2F%2Fu%3Apw-9%40h%2Fx"
                           "&repo=r&changes=ENV%20A%3Dpw-8%20B%3Dpw-7", b"")
    shown = redacted_input(doc)
    assert shown["Query"] == {"fromSrc": [f"http://{MARK}@h/x"], "repo": ["r"],
                              "changes": [f"ENV A={MARK} B={MARK}"]}
    assert shown["Path"] == ("/v1.41/images/create?fromSrc=http%3A%2F%2F%3Credacted%3E%40h%2Fx"
                             "&repo=r&changes=ENV%20A%3D%3Credacted%3E%20B%3D%3Credacted%3E")


def test_decoded_registry_credentials_are_secret_values():
    auth = base64.urlsafe_b64encode(json.dumps(
        {"username": "bob", "password": "reg-pass-1", "auth": base64.b64encode(
            b"bob:basic-pass-2").decode()}).encode()).decode()
    doc = {"Method": "GET", "PathPlain": "/images/json", "Headers": {"X-Registry-Auth": auth}}
    secrets = secret_values(doc)
    assert {"reg-pass-1", "basic-pass-2", auth} <= secrets
    assert scrub("pw reg-pass-1 and basic-pass-2", secrets) == f"pw {MARK} and {MARK}"


def test_short_values_are_masked_but_not_searched_for():
    doc, _ = request_input("POST", "/v1.41/containers/create",
                           json.dumps({"Image": "busybox:1", "Env": ["A=1"]}).encode())
    assert redacted_input(doc)["Body"]["Env"] == [f"A={MARK}"]
    assert scrub_messages(doc, ["image busybox:1"]) == ("image busybox:1",)


def test_a_build_context_helper_is_a_tar():
    assert context_tar(b"FROM x\n")[257:262] == b"ustar"


def test_short_build_args_do_not_mangle_the_dockerfile():
    doc, req = request_input("POST", "/build?buildargs=" + '{"DEBUG":"1","V":"3.18"}', b"")
    doc = {**doc, **build_fields(req, b"ARG V\nFROM alpine:3.18\nARG DEBUG\nENV D=$DEBUG\n")}
    shown = redacted_input(doc)
    assert shown["DockerfileRaw"] == ["ARG V", "FROM alpine:3.18", "ARG DEBUG", "ENV D=$DEBUG", ""]
    assert shown["Dockerfile"] == ["ARG V", "FROM alpine:3.18", "ARG DEBUG", "ENV D=$DEBUG"]
    args = {i["Cmd"]: i["Args"] for i in shown["DockerfileParsed"]["Instructions"]}
    assert args["ENV"] == [f"D={MARK}"] and args["FROM"] == ["alpine:3.18"]


def test_the_named_object_loses_its_driver_options():
    """``Target`` (dsfw.scope) repeats what dockerd stored: log and volume driver options."""
    host_config = {"Binds": ["/srv:/srv"], "LogConfig": {"Type": "splunk", "Config": {
        "splunk-url": "https://splunk.example", "splunk-token": "stored-token-1"}},
        "Mounts": [{"Type": "volume", "VolumeOptions": {"DriverConfig": {
            "Name": "local", "Options": {"o": "password=stored-pass-2"}}}}]}
    container = {"Kind": "container", "ID": "abc", "Name": "web", "HostConfig": host_config}
    for target in (container,
                   {"Kind": "exec", "ID": "e1", "Container": container, "ProcessConfig": {}},
                   {"Kind": "volume", "ID": "v", "Options": {"type": "cifs",
                                                             "o": "password=stored-pass-2"}}):
        doc = {"Method": "POST", "PathPlain": "/containers/web/start", "Target": target}
        shown = redacted_input(doc)
        assert "stored-" not in text_of(shown)
        assert shown["Target"]["Kind"] == target["Kind"]
    shown = redacted_input({"Method": "GET", "PathPlain": "/x", "Target": container})
    assert shown["Target"]["HostConfig"]["Binds"] == ["/srv:/srv"]
    assert shown["Target"]["HostConfig"]["LogConfig"]["Config"] == {
        "splunk-url": MARK, "splunk-token": MARK}


def test_local_volumes_quote_no_mount_password():
    doc, _ = request_input("POST", "/v1.41/volumes/create", json.dumps({
        "Name": "v", "DriverOpts": {"type": "cifs", "device": "//srv/share",
                                    "o": "username=u,password=vol-pass-4"}}).encode())
    assert doc["LocalVolumes"][0]["Options"] == "username=u,password=vol-pass-4"
    shown = redacted_input(doc)
    assert "vol-pass-4" not in text_of(shown)
    assert shown["LocalVolumes"][0]["Type"] == "cifs"
    assert shown["LocalVolumes"][0]["Device"] == "//srv/share"


def test_volume_options_keep_types_and_devices_that_policies_quote():
    doc, _ = request_input("POST", "/v1.41/volumes/create", json.dumps({
        "Name": "v", "DriverOpts": {"type": "none", "device": "/etc", "o": "bind,uid=0",
                                    "secretfile": "/k"}}).encode())
    shown = redacted_input(doc)
    assert shown["Body"]["DriverOpts"] == {"type": "none", "device": "/etc", "o": "bind,uid=0",
                                           "secretfile": MARK}
    assert scrub_messages(doc, ['type "none" would mount "/etc"']) == (
        'type "none" would mount "/etc"',)


@pytest.mark.parametrize("value, shown", [
    ("user:tok-1@registry.example/plugin", f"{MARK}@registry.example/plugin"),
    ("registry.example/ctx.tar?token=tok-2", f"registry.example/ctx.tar?{MARK}"),
    ("busybox:1.36@sha256:" + "a" * 64, "busybox:1.36@sha256:" + "a" * 64),
    ("localbusybox:latest", "localbusybox:latest"),
    ('{"label":["a=b"]}', '{"label":["a=b"]}'),
])
def test_addresses_without_a_scheme_in_any_query_parameter(value, shown):
    from urllib.parse import quote
    for name in ("remote", "fromImage"):  # listed as secret-bearing, and not
        doc, _ = request_input("POST", f"/v1.41/images/create?{name}=" + quote(value, safe=""),
                               b"")
        assert redacted_input(doc)["Query"][name] == [shown]
        assert redacted_query(doc)[name] == [shown]


def test_a_secret_cut_in_half_by_the_message_bound_is_masked_too():
    from dsfw.policy.verdict import MAX_REASON_CHARS, bounded_reasons
    secret = "tok-" + "0123456789abcdef" * 2
    doc, _ = request_input("POST", "/v1.41/containers/create",
                           json.dumps({"Image": "b", "Env": [f"T={secret}"]}).encode())
    for offset in range(1, len(secret)):
        reason = "x" * (MAX_REASON_CHARS - offset) + secret + " tail"
        shown = scrub_messages(doc, bounded_reasons((reason,)))[0]
        assert secret[:MIN_SCRUB] not in shown, offset


@pytest.mark.parametrize("path, body", [
    ("/v1.41/auth", "shape-secret-1"), ("/v1.41/auth", ["shape-secret-1"]),
    ("/v1.41/swarm/init", {"Spec": "shape-secret-1"}),
    ("/v1.41/swarm/init", {"Spec": {"CAConfig": {"ExternalCAs": {"URL": "shape-secret-1"}}}}),
])
def test_a_body_not_shaped_as_dockerd_reads_it_is_masked_where_secrets_go(path, body):
    doc, _ = request_input("POST", path, json.dumps(body).encode())
    assert "shape-secret-1" not in text_of(redacted_input(doc))
