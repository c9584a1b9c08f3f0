"""A repeated JSON body is canonicalized once, and every request still gets its own value.

``with_body`` remembers the canonical serialization of recent small bodies
(dsfw.input.request): the second request with the same bytes must see exactly
what the first saw -- same values, same types -- in a value of its own, and a
refused body must be refused again.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from dsfw.errors import BadRequest, PayloadTooLarge
from dsfw.input.request import canonical_head, input_document, with_body
from tests.test_canonical_cli_bodies import CLI_BODIES


def head(target: str, method: str = "POST"):
    return canonical_head(method, target.encode(), [(b"Content-Type", [b"application/json"])])


def strictly_equal(a, b) -> bool:
    """``==`` that also tells 1 from 1.0 and True, and a list from a tuple."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(strictly_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strictly_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("target,body", CLI_BODIES)
def test_a_repeated_cli_body_gives_the_same_request(target, body):
    first = with_body(head(target), body.encode())
    again = with_body(head(target), body.encode())
    assert strictly_equal(first.body, again.body)
    assert again.json_body == first.json_body
    assert again.headers == first.headers
    assert input_document(again) == input_document(first)


def test_each_request_gets_a_value_of_its_own():
    raw = json.dumps({"Image": "x", "Labels": {"a": "1"}, "HostConfig": {"Binds": ["/a:/b"]}}).encode()
    first = with_body(head("/containers/create"), raw)
    first.body["Labels"]["a"] = "changed"
    first.body["HostConfig"]["Binds"].append("/etc:/etc")
    again = with_body(head("/containers/create"), raw)
    assert again.body == {"Image": "x", "Labels": {"a": "1"}, "HostConfig": {"Binds": ["/a:/b"]}}
    assert again.body is not first.body


def test_the_same_bytes_on_another_route_or_version_are_canonicalized_for_it():
    raw = b'{"image": "x", "hostconfig": {"privileged": true}}'
    create = with_body(head("/v1.41/containers/create"), raw)
    assert create.body == {"Image": "x", "HostConfig": {"Privileged": True}}
    volume = with_body(head("/v1.41/volumes/create"), raw)  # no field of a volume create
    assert "HostConfig" not in json.loads(volume.json_body)
    start_old = with_body(head("/v1.23/containers/x/start"), b'{"privileged": true}')
    start_new = with_body(head("/v1.41/containers/x/start"), b'{"privileged": true}')
    assert start_old.body == {"HostConfig": {"Privileged": True}}  # before 1.24: a HostConfig
    assert start_new.body == {"privileged": True}  # since: not read by dockerd, kept as sent


def test_a_refused_body_is_refused_every_time():
    raw = b'{"Image": "x", "Image": "y"}'
    for _ in range(3):
        with pytest.raises(BadRequest, match="repeats the key"):
            with_body(head("/containers/create"), raw)


def test_the_size_limit_holds_for_a_remembered_body():
    raw = json.dumps({"Image": "x", "Env": ["A=" + "a" * 2000]}).encode()
    with_body(head("/containers/create"), raw)
    with pytest.raises(PayloadTooLarge):
        with_body(head("/containers/create"), raw, max_json_body=1000)


def test_numbers_read_back_as_they_were():
    # a route without a schema keeps any JSON: integers beyond 64 bits, floats, -0.0
    raw = b'{"a": 123456789012345678901234567890, "b": 1.5e3, "c": 1.0, "d": -0.0, "e": [1, 2.5]}'
    first = with_body(head("/nodes/n1/update"), raw)
    again = with_body(head("/nodes/n1/update"), raw)
    assert strictly_equal(first.body, again.body)
    assert again.body["a"] == 123456789012345678901234567890 and type(again.body["c"]) is float


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(labels=st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=4),
       extra=st.dictionaries(st.sampled_from(["Env", "Cmd", "HostConfig", "Unknown", "StopTimeout",
                                              "ExposedPorts", "Volumes", "Healthcheck"]),
                             json_values, max_size=3))
def test_any_accepted_body_reads_back_strictly_equal(labels, extra):
    raw = json.dumps({"Image": "x", "Labels": labels, **extra}).encode()
    try:
        first = with_body(head("/containers/create"), raw)
    except BadRequest:
        with pytest.raises(BadRequest):
            with_body(head("/containers/create"), raw)
        return
    again = with_body(head("/containers/create"), raw)
    assert strictly_equal(first.body, again.body)
    assert again.json_body == first.json_body
