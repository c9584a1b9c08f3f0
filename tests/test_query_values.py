"""Query-parameter values in dockerd's one spelling: shown to the policy and forwarded."""
from __future__ import annotations

import pytest

from dsfw.errors import BadRequest
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
