package dsfw.library.common_test

import rego.v1

_ref(x) := data.dsfw.library.common.image_ref(x)

test_short_names_are_docker_io_library if {
	_ref("busybox") == {"repo": "docker.io/library/busybox", "tag": "", "digest": ""}
	_ref("index.docker.io/library/busybox:1.36").repo == "docker.io/library/busybox"
	_ref("myorg/app").repo == "docker.io/myorg/app"
}

test_registries_tags_and_digests if {
	_ref("localhost:5000/a/b:c") == {"repo": "localhost:5000/a/b", "tag": "c", "digest": ""}
	_ref("localhost/x").repo == "localhost/x"
	_ref("reg.io/a:b@sha256:1") == {"repo": "reg.io/a", "tag": "b", "digest": "sha256:1"}
}

test_invalid_references_are_undefined if {
	not _ref("a@b@c")
	not _ref("a:b:c")
}

test_image_ids if {
	data.dsfw.library.common.image_id("cafe")
	data.dsfw.library.common.image_id("sha256:0123abcd")
	not data.dsfw.library.common.image_id("busybox")
	not data.dsfw.library.common.image_id("cafe:1")
}

_ok(ref, entry) if data.dsfw.library.common.image_allowed_by(_ref(ref), entry)

test_allowlist_entries if {
	_ok("busybox:1.2", "busybox")
	_ok("docker.io/library/busybox@sha256:1", "busybox")
	_ok("busybox", "busybox:latest")
	_ok("busybox:1.36", "busybox:1.36")
	not _ok("busybox:1.36@sha256:2", "busybox:1.36")
	not _ok("busybox:1.37", "busybox:1.36")
	_ok("busybox@sha256:1", "busybox@sha256:1")
	not _ok("busybox@sha256:2", "busybox@sha256:1")
	_ok("reg.io/team/x:1", "reg.io/team/*")
	not _ok("reg.io/other/x", "reg.io/team/*")
	_ok("myorg/app", "myorg/*")
	not _ok("busyboxx", "busybox")
}

_alice := {"User": "alice", "Uid": 1000, "Group": "dev", "Gid": 100, "Pid": 1}

test_caller_in if {
	data.dsfw.library.common.caller_in({"users": ["alice"]}) with input.Peer as _alice
	data.dsfw.library.common.caller_in({"gids": [100]}) with input.Peer as _alice
	data.dsfw.library.common.caller_in({"groups": ["dev"]}) with input.Peer as _alice
	data.dsfw.library.common.caller_in({"uids": [1000]}) with input.Peer as _alice
	not data.dsfw.library.common.caller_in({"users": ["bob"], "groups": ["ops"]}) with input.Peer as _alice
	not data.dsfw.library.common.caller_in({"users": ["alice"]}) with input as {}
	not data.dsfw.library.common.caller_in("alice") with input.Peer as _alice
}

test_config_problems if {
	problems := data.dsfw.library.common.config_problems("x", {"a": "list", "b": "bool"}) with data.library as {"x": {"a": "nope", "c": 1}}
	problems == {
		"dsfw library: data.library.x.a must be a list; fix data.yaml",
		"dsfw library: unknown setting data.library.x.c (known: a, b); fix data.yaml",
	}
	count(data.dsfw.library.common.config_problems("x", {"a": "list"})) == 0 with data.library as {"x": {"a": []}}
	"dsfw library: data.library must be a mapping of policy names to settings; fix data.yaml" in data.dsfw.library.common.config_problems("x", {}) with data.library as "oops"
	"dsfw library: data.library.x must be a mapping of settings; fix data.yaml" in data.dsfw.library.common.config_problems("x", {}) with data.library as {"x": [1]}
}

test_query_first_value if {
	data.dsfw.library.common.query("a") == "1" with input.Query as {"a": ["1", "2"]}
	data.dsfw.library.common.query("b") == "" with input.Query as {"a": ["1"]}
}
