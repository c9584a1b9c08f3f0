"""The request target as dockerd 20.10 (Go 1.19, gorilla/mux) reads it.

Each expectation here was checked against the real dockerd; the ones that
need it running are in test_canonical_dockerd.py.
"""
from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, strategies as st

from dsfw.input.path import (canonical_target, canonical_version, go_clean_path,
                                 parse_go_query)
from dsfw.errors import BadRequest


def test_plain_versioned_target():
    t = canonical_target(b"/v1.41/containers/json?all=1&limit=2")
    assert (t.path, t.version, t.plain_path) == ("/v1.41/containers/json", "1.41", "/containers/json")
    assert t.query == (("all", "1"), ("limit", "2"))
    assert t.forward_target() == b"/v1.41/containers/json?all=1&limit=2"
    assert t.policy_path() == "/v1.41/containers/json?all=1&limit=2"


def test_unversioned_target_has_no_version():
    t = canonical_target(b"/containers/create")
    assert (t.version, t.plain_path, t.policy_path()) == (None, "/containers/create",
                                                         "/containers/create?")


@pytest.mark.parametrize("raw,version", [
    (b"/v01.41/version", "1.41"), (b"/v1.41.0/version", "1.41"), (b"/v1.041/version", "1.41"),
    (b"/v1.24/version", "1.24"), (b"/v1.99/version", "1.99"), (b"/v1.11/version", "1.11"),
])
def test_versions_compare_numerically(raw, version):
    t = canonical_target(raw)
    assert t.version == version
    assert t.forward_target() == f"/v{version}/version".encode()


@pytest.mark.parametrize("raw", [b"/v1..41/version", b"/v.41/version", b"/v1./version",
                                 b"/v1/version", b"/v1.40.5/version", b"/v1.0000001234567/x"])
def test_versions_dockerd_reads_as_zeros_or_beyond_major_minor_are_refused(raw):
    with pytest.raises(BadRequest):
        canonical_target(raw)


def test_path_is_percent_decoded_as_mux_matches_it():
    t = canonical_target(b"/v1.41/%6eetworks/create")
    assert t.plain_path == "/networks/create"
    assert t.forward_target() == b"/v1.41/networks/create"


def test_encoded_slash_is_a_slash_for_mux():
    t = canonical_target(b"/v1.41/containers/abc%2Fdef/json")
    assert t.plain_path == "/containers/abc/def/json"


def test_encoded_specials_stay_encoded_when_forwarded():
    t = canonical_target(b"/containers/a%3Fb%25c%23/json")
    assert t.plain_path == "/containers/a?b%c#/json"
    assert t.forward_target() == b"/containers/a%3Fb%25c%23/json"


@pytest.mark.parametrize("raw", [
    b"/v1.41/containers/../version", b"/v1.41//version", b"/v1.41/./version",
    b"/v1.41/containers/%2e%2e/version", b"/v1.41/containers/x%2F..%2F../version",
    b"//v1.41/version",
])
def test_unclean_paths_are_refused_because_dockerd_redirects_them(raw):
    with pytest.raises(BadRequest, match="not clean"):
        canonical_target(raw)


def test_trailing_slash_is_kept_as_mux_keeps_it():
    assert canonical_target(b"/v1.41/version/").plain_path == "/version/"


@pytest.mark.parametrize("raw", [
    b"http://docker/v1.41/version", b"*", b"/v1.41/version#x", b"/a%zz", b"/a%2",
    b"/a%00b", b"/a%0ab", b"/a\x01b", b"/a b", b"/a%ff",
])
def test_targets_dockerd_refuses_or_that_could_read_two_ways_are_refused(raw):
    with pytest.raises(BadRequest):
        canonical_target(raw)


def test_query_follows_go_parse_query():
    assert parse_go_query(b"a=1&&b&=x&c=%41+b&a=2") == (
        ("a", "1"), ("b", ""), ("", "x"), ("c", "A b"), ("a", "2"))


@pytest.mark.parametrize("raw", [b"all=1;limit=1", b"a=%zz", b"a=1&b=%", b"a%=1", b"a=%ff%fe"])
def test_query_errors_of_go_are_refused(raw):
    with pytest.raises(BadRequest):
        parse_go_query(raw)


def test_plus_is_space_and_encoded_plus_is_plus():
    t = canonical_target(b"/images/json?filters=a+b%2Bc")
    assert t.param("filters") == "a b+c"
    assert t.forward_target() == b"/images/json?filters=a%20b%2Bc"


def test_query_dict_keeps_repeats_in_order():
    t = canonical_target(b"/x?f=1&g=2&f=3")
    assert t.query_dict() == {"f": ["1", "3"], "g": ["2"]}
    assert t.param("f") == "1"


def test_canonical_version_helper():
    assert canonical_version("01.041") == "1.41"
    with pytest.raises(BadRequest):
        canonical_version("1.x")


@given(st.text(alphabet="/.ab", max_size=20))
def test_go_clean_path_is_idempotent_and_rooted(path):
    cleaned = go_clean_path(path)
    assert cleaned.startswith("/")
    assert go_clean_path(cleaned) == cleaned
    assert "//" not in cleaned and "/./" not in cleaned and "/../" not in cleaned


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@given(st.lists(st.tuples(_text, _text), max_size=5),
       st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1,
                        max_size=8).filter(lambda s: s not in (".", "..") and "/" not in s),
                min_size=1, max_size=4),
       st.one_of(st.none(), st.sampled_from(["1.41", "1.24", "1.12"])))
def test_forwarded_target_reads_back_to_what_the_policy_saw(query, segments, version):
    """The forwarded bytes are a fixed point: dockerd reads what the policy read."""
    query = [(k, v) for k, v in query if k or v]
    path = ("/v" + version if version else "") + "/containers/" + "/".join(segments)
    raw_query = "&".join(quote(k, safe="") + "=" + quote(v, safe="") for k, v in query)
    first = canonical_target(quote(path, safe="/").encode() + b"?" + raw_query.encode())
    assert first.query == tuple(query)
    assert first.version == version
    again = canonical_target(first.forward_target())
    assert again == first
