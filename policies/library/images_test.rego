package dsfw.library.images_test

import rego.v1

_cfg := {"images": {"allowed": ["busybox", "reg.io/team/*"]}}

_create(image) := {"Method": "POST", "PathPlain": "/containers/create", "Query": {}, "Body": {"Image": image}}

_deny(inp) := d if d := data.dsfw.library.images.deny with input as inp with data.library as _cfg

test_allowed_image_passes if {
	count(_deny(_create("busybox:1.36"))) == 0
	count(_deny(_create("reg.io/team/app@sha256:1"))) == 0
}

test_other_registry_refused_with_the_allowlist if {
	_deny(_create("evil.io/x:1")) == {`image "evil.io/x:1" (container image, read as evil.io/x:1) is not from an allowed registry or repository; use one of: busybox, reg.io/team/*`}
}

test_image_ids_refused if {
	some msg in _deny(_create("cafe"))
	contains(msg, "looks like an image ID")
}

test_invalid_reference_refused if {
	_deny(_create("a@b@c")) == {`"a@b@c" (container image) is not a valid image reference`}
}

test_non_string_image_refused if {
	_deny(_create(7)) == {"container image is not an image name; name an image from an allowed registry"}
}

test_service_image if {
	some msg in _deny({"Method": "POST", "PathPlain": "/services/create", "Query": {}, "Body": {"TaskTemplate": {"ContainerSpec": {"Image": "evil/x"}}}})
	contains(msg, "service image")
}

test_pull_uses_from_image_and_tag if {
	count(_deny({"Method": "POST", "PathPlain": "/images/create", "Query": {"fromImage": ["busybox"], "tag": ["latest"]}})) == 0
	some msg in _deny({"Method": "POST", "PathPlain": "/images/create", "Query": {"fromImage": ["evil"], "tag": ["sha256:aa"]}})
	contains(msg, "read as docker.io/library/evil@sha256:aa")
}

test_pull_tag_pin if {
	some msg in data.dsfw.library.images.deny with input as {"Method": "POST", "PathPlain": "/images/create", "Query": {"fromImage": ["busybox"], "tag": ["1.37"]}}
		with data.library as {"images": {"allowed": ["busybox:1.36"]}}
	contains(msg, "pulled image")
}

test_import_and_load_refused_unless_allowed if {
	_deny({"Method": "POST", "PathPlain": "/images/create", "Query": {"fromSrc": ["-"], "repo": ["busybox"]}}) == {"docker import is not allowed: it makes an image that comes from no registry; pull an image from an allowed registry instead (or set data.library.images.allow_import)"}
	count(data.dsfw.library.images.deny) == 0 with input as {"Method": "POST", "PathPlain": "/images/create", "Query": {"fromSrc": ["-"]}} with data.library as {"images": {"allow_import": true}}
	_deny({"Method": "POST", "PathPlain": "/images/load", "Query": {}}) == {"docker load is not allowed: it brings in images from no registry; pull an image from an allowed registry instead (or set data.library.images.allow_load)"}
}

test_tag_checks_both_names if {
	d := _deny({"Method": "POST", "PathPlain": "/images/evil.io/x/tag", "Query": {"repo": ["evil2/y"], "tag": ["1"]}})
	count(d) == 2
	count(_deny({"Method": "POST", "PathPlain": "/images/busybox/tag", "Query": {"repo": ["busybox"]}})) == 0
}

test_commit_name if {
	some msg in _deny({"Method": "POST", "PathPlain": "/commit", "Query": {"container": ["c"], "repo": ["evil/x"]}})
	contains(msg, "committed image")
	count(_deny({"Method": "POST", "PathPlain": "/commit", "Query": {"container": ["c"]}})) == 0
}

test_build_external_images if {
	d := data.dsfw.library.images.build_deny with input as {"ExternalImages": ["busybox", "node:18"]} with data.library as _cfg
	d == {`image "node:18" (Dockerfile, read as docker.io/library/node:18) is not from an allowed registry or repository; use one of: busybox, reg.io/team/*`}
}

test_no_allowlist_says_how_to_fix if {
	some msg in data.dsfw.library.images.deny with input as _create("busybox") with data.library as {}
	contains(msg, "(none: set data.library.images.allowed)")
}

test_exempt_caller if {
	count(data.dsfw.library.images.deny) == 0 with input as object.union(_create("evil/x"), {"Peer": {"User": "ci", "Uid": 5, "Group": "ci", "Gid": 5}})
		with data.library as {"images": {"allowed": [], "exempt": {"users": ["ci"]}}}
}

test_config_problems_reported if {
	"dsfw library: data.library.images.allow_load must be a bool; fix data.yaml" in data.dsfw.library.images.deny with input as {"Method": "GET", "PathPlain": "/_ping", "Query": {}}
		with data.library as {"images": {"allow_load": "yes"}}
}

test_other_requests_untouched if {
	count(_deny({"Method": "GET", "PathPlain": "/containers/json", "Query": {}})) == 0
}
