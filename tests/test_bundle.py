"""OPA bundles: reading archives safely, OPA's signature format, compiling with roots."""
from __future__ import annotations

import io
import json
import tarfile

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from dsfw.policy.bundle import (BundleError, BundleVerifier, canonical_json, file_hash,
                                read_bundle)
from dsfw.policy.bundle_service import compile_bundle, local_path
from dsfw.policy.loader import PolicyLoadError
from dsfw.testing.fleet import make_bundle, public_pem

POLICY = "package docker.authz\nimport rego.v1\ndefault allow := false\n" \
         "allow if input.Method in data.docker.methods\n"
DATA = json.dumps({"docker": {"methods": ["GET"]}})


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def evaluate(bundle, method: str):
    policy = compile_bundle(bundle, "test")
    policy.engine.set_input_json(json.dumps({"Method": method}))
    return policy.engine.eval_rule("data.docker.authz.allow")


def test_unsigned_bundle_with_manifest():
    bundle = read_bundle(make_bundle({"authz.rego": POLICY, "data.json": DATA},
                                     revision="r1", roots=["docker"]))
    assert (bundle.revision, bundle.roots, bundle.signed) == ("r1", ("docker",), False)
    assert sorted(bundle.files) == ["authz.rego", "data.json"]
    assert evaluate(bundle, "GET") is True and evaluate(bundle, "POST") is False
    assert compile_bundle(bundle, "t").revision == "r1"


def test_data_files_go_under_their_directory():
    bundle = read_bundle(make_bundle({
        "authz.rego": POLICY.replace("data.docker.methods", "data.docker.m.list"),
        "docker/m/data.yaml": "list: [GET, HEAD]\n"}))
    assert evaluate(bundle, "HEAD") is True


def test_revision_defaults_to_the_archive_digest():
    bundle = read_bundle(make_bundle({"authz.rego": POLICY, "data.json": DATA}))
    assert compile_bundle(bundle, "t").revision.startswith("sha256:")


@pytest.mark.parametrize("files, roots, message", [
    ({"authz.rego": POLICY, "data.json": DATA}, ["other"], "outside the bundle's roots"),
    ({"authz.rego": POLICY, "data.json": json.dumps({"docker": {"methods": []}, "x": 1})},
     ["docker"], "outside the bundle's roots"),
    ({"authz.rego": "package docker.authz\nallow if {{{\n"}, None, "authz.rego"),
])
def test_broken_or_out_of_roots_bundles_do_not_compile(files, roots, message):
    with pytest.raises(PolicyLoadError, match=message):
        compile_bundle(read_bundle(make_bundle(files, revision="x", roots=roots)), "t")


def archive(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, content in members:
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return buf.getvalue()


def entry(name, content=b"x", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(content) if kind == tarfile.REGTYPE else 0
    info.linkname = link
    return info, content if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize("data, message", [
    (archive([entry("../evil.rego")]), "leaves the bundle"),
    (archive([entry("/a/../../evil.rego")]), "leaves the bundle"),
    (archive([entry("link.rego", kind=tarfile.SYMTYPE, link="/etc/passwd")]), "not a regular"),
    (archive([entry("dev", kind=tarfile.CHRTYPE)]), "not a regular"),
    (archive([entry("a.rego"), entry("./a.rego")]), "twice"),
    (b"not gzip at all", "not a readable"),
    (make_bundle({"authz.rego": POLICY})[:-30], "not a readable"),
    (archive([entry("big.rego", b"x" * 5000)]), "more than 4096 bytes"),
])
def test_unsafe_archives_refused(data, message):
    with pytest.raises(BundleError, match=message):
        read_bundle(data, max_bytes=4096)


def test_compressed_size_limit():
    with pytest.raises(BundleError, match="exceeds the limit"):
        read_bundle(make_bundle({"authz.rego": POLICY}), max_bytes=10)


def test_canonical_json_ignores_formatting():
    a = file_hash("data.json", b'{"b": [1, 2.50], "a": "<&>\xc3\xa9"}', "SHA-256")
    b = file_hash("x/data.json", b'{\n  "a":"<&>\\u00e9",\n  "b":[1,2.50]\n}', "SHA-256")
    assert a == b
    assert canonical_json(json.loads('{"z": {"y": null, "x": true}}')) == \
        b'{"z":{"x":true,"y":null}}'
    assert file_hash("a.rego", b"x", "SHA-256") != file_hash("a.rego", b"x ", "SHA-256")


@pytest.mark.parametrize("key_name", ["rsa_key", "ec_key"])
def test_signed_bundle_verifies(request, key_name):
    key = request.getfixturevalue(key_name)
    data = make_bundle({"authz.rego": POLICY, "data.json": DATA}, revision="s1", sign_with=key)
    bundle = read_bundle(data, BundleVerifier(public_pem(key), key_id="dsfw-test"))
    assert bundle.signed and bundle.revision == "s1"


def test_signature_failures(rsa_key, ec_key):
    verifier = BundleVerifier(public_pem(rsa_key))
    files = {"authz.rego": POLICY, "data.json": DATA}
    cases = {
        "does not verify": make_bundle(files, sign_with=rsa_key, tamper=True),
        "fit the configured key": make_bundle(files, sign_with=ec_key),
        "not signed": make_bundle(files),
        "not covered": make_bundle(files, sign_with=rsa_key, extra={"x.rego": b"package x"}),
    }
    for message, data in cases.items():
        with pytest.raises(BundleError, match=message):
            read_bundle(data, verifier)
    with pytest.raises(BundleError, match="key id"):
        read_bundle(make_bundle(files, sign_with=rsa_key), BundleVerifier(public_pem(rsa_key),
                                                                          key_id="other"))
    # a file changed after signing
    signed = make_bundle(files, sign_with=rsa_key)
    members = {}
    with tarfile.open(fileobj=io.BytesIO(signed)) as tar:
        for m in tar:
            members[m.name] = tar.extractfile(m).read()
    members["/authz.rego"] = POLICY.replace("false", "true").encode()
    with pytest.raises(BundleError, match="digest does not match"):
        read_bundle(archive([entry(n, c) for n, c in members.items()]), verifier)
    del members["/authz.rego"]
    with pytest.raises(BundleError, match="missing from the bundle"):
        read_bundle(archive([entry(n, c) for n, c in members.items()]), verifier)


def test_unsigned_algorithms_refused(rsa_key):
    header = "eyJhbGciOiJub25lIn0"  # {"alg":"none"}
    payload = "eyJmaWxlcyI6W119"  # {"files":[]}
    data = make_bundle({"authz.rego": POLICY},
                       extra={".signatures.json": json.dumps(
                           {"signatures": [f"{header}.{payload}."]}).encode()})
    with pytest.raises(BundleError, match="not accepted"):
        read_bundle(data, BundleVerifier(public_pem(rsa_key)))


def test_local_path():
    assert local_path("file:///srv/b.tar.gz") == "/srv/b.tar.gz"
    assert local_path("/srv/b.tar.gz") == "/srv/b.tar.gz"
    assert local_path("https://example/b.tar.gz") is None
    with pytest.raises(ValueError):
        local_path("ftp://example/b.tar.gz")
