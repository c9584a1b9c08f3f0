"""Steps stay linear in a body's size, and counts Docker would never need are refused early."""
from __future__ import annotations

import json
import time

import pytest

from dsfw.errors import BadRequest
from dsfw.input.body import MAX_COLLECTION_ITEMS, parse_json_body
from dsfw.input.derived import MAX_MOUNT_SOURCES, facts_for


def test_a_list_or_object_beyond_the_limit_is_refused_while_parsing():
    for doc in ({"HostConfig": {"Binds": ["/a:/a"] * (MAX_COLLECTION_ITEMS + 1)}},
                {"Labels": {str(i): "" for i in range(MAX_COLLECTION_ITEMS + 1)}}):
        with pytest.raises(BadRequest, match="more than 65536 is refused"):
            parse_json_body(json.dumps(doc).encode())
    parse_json_body(json.dumps({"Env": ["A=1"] * MAX_COLLECTION_ITEMS}).encode())


def test_each_host_path_is_resolved_once_however_often_it_is_listed():
    calls = []

    def resolve(path):
        calls.append(path)
        return path
    body = {"HostConfig": {"Binds": ["/srv/data:/m"] * 60_000 + ["/etc:/e"]}}
    started = time.perf_counter()
    facts = facts_for("POST", "/containers/create", "1.41", body, resolve)
    assert time.perf_counter() - started < 2  # was minutes: a list scan and realpath per entry
    assert facts["BindMounts"] == ["/srv/data", "/etc"]
    assert sorted(calls) == ["/etc", "/srv/data"]


def test_too_many_distinct_host_paths_are_refused():
    body = {"HostConfig": {"Binds": [f"/srv/{i}:/m/{i}" for i in range(MAX_MOUNT_SOURCES + 1)]}}
    with pytest.raises(BadRequest, match="more than 4096 distinct host paths"):
        facts_for("POST", "/containers/create", "1.41", body, lambda p: p)
    body["HostConfig"]["Binds"].pop()
    assert len(facts_for("POST", "/containers/create", "1.41", body,
                         lambda p: p)["BindMounts"]) == MAX_MOUNT_SOURCES
