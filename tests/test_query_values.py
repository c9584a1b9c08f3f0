"""Query-parameter values in dockerd's one spelling: shown to the policy and forwarded."""
from __future__ import annotations

import pytest

from dsfw.errors import BadRequest
from dsfw.input.queryvalues import image_reference
from dsfw.input.request import canonical_head, input_document


def head(target: bytes, method: str = "POST"):
    return canonical_head(method, target, [])


@pytest.mark.parametrize("target, forwarded", [
    (b"/v1.41/containers/create?name=/web", b"/v1.41/containers/create?name=web"),
    (b"/v1.41/containers/create?name=%2Fweb", b"/v1.41/containers/create?name=web"),
    (b"/v1.41/containers/create?name=web", b"/v1.41/containers/create?name=web"),
    (b"/containers/abc/rename?name=/new", b"/containers/abc/rename?name=new"),
    (b"/v1.41/build?networkmode=host&t=a", b"/v1.41/build?networkmode=host&t=a"),
    # other endpoints' "name" is not a container name
    (b"/v1.41/volumes/create?name=/x", b"/v1.41/volumes/create?name=%2Fx"),
])
def test_rewritten_values_are_shown_and_forwarded(target, forwarded):
    req = head(target)
    assert req.target.forward_target() == forwarded
    doc = input_document(req)
    assert doc["Path"].split("?", 1)[1] == forwarded.decode().split("?", 1)[1]
    if b"name=" in forwarded and b"volumes" not in target:
        assert doc["Query"]["name"] == [forwarded.decode().rsplit("name=", 1)[1]]


@pytest.mark.parametrize("target, message", [
    (b"/v1.41/containers/create?name=//web", "invalid container name '//web'"),
    (b"/v1.41/containers/create?name=x&name=//web", "invalid container name '//web'"),
    (b"/v1.41/build?networkmode=container:/other", "write 'container:other'"),
])
def test_values_without_one_spelling_are_refused(target, message):
    with pytest.raises(BadRequest, match=message):
        head(target)


DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("query, ref", [
    ("fromImage=busybox&tag=latest", "docker.io/library/busybox:latest"),
    ("fromImage=index.docker.io/library/busybox:&tag=1.36", "docker.io/library/busybox:1.36"),
    ("fromImage=busybox:1.36&tag=latest", "docker.io/library/busybox:latest"),  # tag wins
    ("fromImage=busybox", "docker.io/library/busybox"),  # every tag
    ("fromImage=user/app:1&tag=" + DIGEST, "docker.io/user/app@" + DIGEST),
    ("fromImage=localhost:5000/a/b@" + DIGEST + "&tag=v2", "localhost:5000/a/b:v2@" + DIGEST),
    ("fromImage=Registry/x", "Registry/x"),
])
def test_pulled_image_reference_is_a_derived_fact(query, ref):
    req = head(f"/v1.41/images/create?{query}".encode())
    doc = input_document(req)
    assert doc["ImageRef"] == ref
    assert req.target.query == head(f"/images/create?{query}".encode()).target.query  # as sent


@pytest.mark.parametrize("query", [
    "fromImage=BusyBox", "fromImage=" + "a" * 64, "fromImage=busybox&tag=bad%20tag",
    "fromImage=busybox&tag=sha256:abc", "fromImage=busybox@sha256:abc",
])
def test_references_dockerd_refuses_have_no_image_ref(query):
    """dockerd answers those itself; the text (maybe user:token@host) is never echoed."""
    assert "ImageRef" not in input_document(head(f"/v1.41/images/create?{query}".encode()))
    with pytest.raises(BadRequest, match="invalid image reference; dockerd"):
        image_reference(*(q.split("=", 1)[1] for q in query.split("&")))


def test_imports_and_other_routes_have_no_image_ref():
    assert "ImageRef" not in input_document(head(b"/images/create?fromSrc=-&repo=x"))
    assert "ImageRef" not in input_document(head(b"/containers/create?name=x"))
