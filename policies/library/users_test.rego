package dsfw.library.users_test

import rego.v1

_create(user, hc) := {"Method": "POST", "PathPlain": "/containers/create", "Query": {}, "Body": {"Image": "busybox", "User": user, "HostConfig": hc}}

_exec(user) := {"Method": "POST", "PathPlain": "/containers/c1/exec", "Query": {}, "Body": {"User": user, "Cmd": ["sh"]}}

_service(spec) := {"Method": "POST", "PathPlain": "/services/create", "Query": {}, "Body": {"TaskTemplate": {"ContainerSpec": spec}}}

_deny(inp) := d if d := data.dsfw.library.users.deny with input as inp with data.library as {}

test_non_root_and_image_default_pass if {
	every user in ["", "1000", "1000:1000", "app", "app:app", "10", "rooted", "0x0", "1000:100"] {
		count(_deny(_create(user, {}))) == 0
	}
	count(_deny({"Method": "POST", "PathPlain": "/containers/create", "Query": {}, "Body": {"Image": "busybox"}})) == 0
	count(_deny(_exec(""))) == 0
}

test_root_in_every_spelling if {
	every user in ["root", "0", "00", "+0", "-0", "0:0", "root:root", "0:1000", "root:app", "0:0:extra"] {
		some msg in _deny(_create(user, {}))
		startswith(msg, "running a container as root is not allowed")
	}
	_deny(_create("00", {})) == {`running a container as root is not allowed: user "00" is uid 0; give docker run -u a non-root user (such as docker run -u 1000)`}
}

test_root_group if {
	_deny(_create("1000:0", {})) == {`running a container with the root group is not allowed: user "1000:0" is gid 0; give docker run -u a non-root group`}
	some msg in _deny(_create(":root", {}))
	contains(msg, "root group")
	_deny(_create("", {"GroupAdd": ["users", "00"]})) == {"the root group is not allowed: drop --group-add 00 (HostConfig.GroupAdd)"}
}

test_exec_as_root if {
	_deny(_exec("root")) == {`running a exec as root is not allowed: user "root" is uid 0; give docker exec -u a non-root user (such as docker exec -u 1000)`}
}

test_service_user_and_groups if {
	some msg in _deny(_service({"Image": "busybox", "User": "0"}))
	startswith(msg, "running a service as root")
	_deny(_service({"Image": "busybox", "Groups": ["root"]})) == {"the root group is not allowed: drop --group root (ContainerSpec.Groups)"}
	count(_deny(_service({"Image": "busybox", "User": "1000"}))) == 0
}

test_require_user if {
	d := data.dsfw.library.users.deny with input as _create("", {}) with data.library as {"users": {"require_user": true}}
	d == {"a container must name its user: the image's default user is often root; give docker run -u a non-root user (data.library.users.require_user)"}
	count(data.dsfw.library.users.deny) == 0 with input as _create("1000", {}) with data.library as {"users": {"require_user": true}}
}

test_allow_root_and_exempt if {
	count(data.dsfw.library.users.deny) == 0 with input as _create("0", {}) with data.library as {"users": {"allow_root": true}}
	count(data.dsfw.library.users.deny) == 0 with input as object.union(_exec("0"), {"Peer": {"User": "ops", "Uid": 7, "Group": "ops", "Gid": 7}})
		with data.library as {"users": {"exempt": {"uids": [7]}}}
}

test_config_problems if {
	"dsfw library: data.library.users.require_user must be a bool; fix data.yaml" in data.dsfw.library.users.deny with input as _create("", {}) with data.library as {"users": {"require_user": "yes"}}
}
