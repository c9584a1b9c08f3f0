package dsfw.library.ownership_test

import rego.v1

_alice := {"Uid": 1000, "Gid": 1000, "User": "alice", "Group": "dev"}

_bob := {"Uid": 1001, "Gid": 1000, "User": "bob", "Group": "dev"}

_admin := {"Uid": 0, "Gid": 0, "User": "root", "Group": "docker-admins"}

_lib := {"enabled": true, "ownership": {"exempt": {"groups": ["docker-admins"]}}}

_req(peer, method, route, extra) := object.union({"Method": method, "PathPlain": route, "Route": route, "Query": {}, "Peer": peer}, extra)

_container(uid) := {"Kind": "container", "ID": "c1", "Name": "web", "Labels": {"dsfw.owner.uid": sprintf("%d", [uid])}, "Owner": {"Uid": uid, "User": "x"}}

_unowned(kind) := {"Kind": kind, "ID": "i1", "Name": "bridge", "Labels": {}, "Owner": null}

_visible(peer, item) if data.docker.authz.visible with input as _req(peer, "GET", "/containers/json", {"Item": item}) with data.library as _lib

# this policy's messages only (the whole library is loaded here, readonly.rego included)
_deny(inp) := {m | some m in data.docker.authz.deny with input as inp with data.library as _lib; contains(m, "ownership")}

test_creates_are_stamped_with_the_caller if {
	data.docker.authz.labels == {"dsfw.owner.uid": "1000", "dsfw.owner.user": "alice"} with input as _req(_alice, "POST", "/containers/create", {}) with data.library as _lib
	data.docker.authz.labels == {"dsfw.owner.uid": "7"} with input as _req({"Uid": 7, "User": null}, "POST", "/volumes/create", {}) with data.library as _lib
}

test_no_peer_no_labels if {
	not data.docker.authz.labels with input as {"Method": "POST", "PathPlain": "/containers/create", "Route": "/containers/create", "Query": {}} with data.library as _lib
}

test_owner_sees_own_objects_only if {
	_visible(_alice, _container(1000))
	not _visible(_bob, _container(1000))
	not _visible(_bob, _unowned("container"))
}

test_exempt_sees_everything if {
	_visible(_admin, _container(1000))
	_visible(_admin, _unowned("volume"))
}

test_shared_kinds if {
	_visible(_bob, _unowned("network"))
	_visible(_bob, _unowned("image"))
	not _visible(_bob, _unowned("volume"))
	not data.docker.authz.visible with input as _req(_bob, "GET", "/images/json", {"Item": _unowned("image")})
		with data.library as {"enabled": true, "ownership": {"shared": ["network"]}}
}

test_exec_follows_its_container if {
	exec := {"Kind": "exec", "ID": "e1", "Owner": {"Uid": 1000, "User": "alice"}, "Container": _container(1000)}
	_visible(_alice, exec)
	not _visible(_bob, exec)
}

test_inert_when_the_library_is_not_enabled if {
	data.docker.authz.visible with input as _req(_bob, "GET", "/containers/json", {"Item": _container(1000)}) with data.library as {}
}

test_shared_objects_are_changed_by_exempt_callers_only if {
	rm := _req(_bob, "DELETE", "/images/{name}", {"Target": _unowned("image")})
	some msg in _deny(rm)
	startswith(msg, "image bridge is shared: only exempt callers change or remove it; you are user bob")
	count(_deny(object.union(rm, {"Peer": _admin}))) == 0
	count(_deny(_req(_bob, "POST", "/images/{name}/tag", {"Target": _unowned("image")}))) == 0
	count(_deny(_req(_bob, "DELETE", "/containers/{id}", {"Target": _container(1001)}))) == 0
}

test_prunes_are_limited_to_the_callers_objects if {
	count(_deny(_req(_bob, "POST", "/containers/prune", {}))) == 0
	data.docker.authz.labels == {"dsfw.owner.uid": "1001", "dsfw.owner.user": "bob"} with input as _req(_bob, "POST", "/volumes/prune", {}) with data.library as _lib
	not data.docker.authz.labels with input as _req(_admin, "POST", "/images/prune", {}) with data.library as _lib
	data.docker.authz.labels with input as _req(_admin, "POST", "/containers/create", {}) with data.library as _lib
	some msg in _deny(_req({"User": "tlsclient"}, "POST", "/networks/prune", {}))
	startswith(msg, "a prune is limited to the caller's objects by its uid")
}

test_unscoped_actions_need_an_exempt_caller if {
	some msg in _deny(_req(_bob, "POST", "/build/prune", {}))
	startswith(msg, "pruning the build cache acts on objects of other callers")
	count(_deny(_req(_bob, "GET", "/images/get", {"Images": {"x:1": _unowned("image")}}))) == 0
	count(_deny(_req(_bob, "GET", "/system/df", {}))) == 0
	not data.docker.authz.visible with input as _req(_bob, "GET", "/system/df", {"Item": _unowned("buildcache")}) with data.library as _lib
	data.docker.authz.visible with input as _req(_admin, "GET", "/system/df", {"Item": _unowned("buildcache")}) with data.library as _lib
}

test_connect_and_commit_are_judged_on_their_containers if {
	connect := _req(_bob, "POST", "/networks/{id}/connect", {"Target": _unowned("network"), "Container": _container(1001)})
	count(_deny(connect)) == 0
	data.docker.authz.visible with input as object.union(connect, {"Item": connect.Container}) with data.library as _lib
	not data.docker.authz.visible with input as object.union(connect, {"Item": _container(1000)}) with data.library as _lib
	count(_deny(_req(_bob, "POST", "/commit", {"Target": _container(1001)}))) == 0
}

test_config_problems if {
	d := data.docker.authz.deny with input as _req(_alice, "GET", "/_ping", {}) with data.library as {"enabled": true, "ownership": {"shared": ["imagez"], "exempt": []}}
	"dsfw library: data.library.ownership.exempt must be a object; fix data.yaml" in d
	some msg in d
	startswith(msg, "dsfw library: unknown kind imagez in data.library.ownership.shared")
}

_vol(uid) := {"Kind": "volume", "ID": "v", "Name": "v", "Labels": {}, "Owner": {"Uid": uid, "User": "x"}}

_create(vols) := _req(_bob, "POST", "/containers/create", {"Volumes": vols})

test_other_callers_volumes_cannot_be_mounted if {
	some msg in _deny(_create({"data": _vol(1000)}))
	startswith(msg, "volume data cannot be mounted: it is another caller's; you are user bob")
	count(_deny(_create({"data": _vol(1001), "new": null}))) == 0
	count(_deny(_create({"data": {"Kind": "volume", "ID": "v", "Owner": null}}))) == 1
	count(_deny(object.union(_create({"data": _vol(1000)}), {"Peer": _admin}))) == 0
}

_img(uid) := {"Kind": "image", "ID": sprintf("sha256:%d", [uid]), "Name": "x:1", "Labels": {}, "Owner": {"Uid": uid, "User": "x"}}

test_names_held_by_others_cannot_be_taken if {
	tag := _req(_bob, "POST", "/images/{name}/tag", {"Target": _img(1001), "Destinations": {"app:1": _img(1000)}})
	some msg in _deny(tag)
	startswith(msg, "image name app:1 is held by an image you cannot change")
	count(_deny(object.union(tag, {"Destinations": {"app:1": _img(1001)}}))) == 0
	count(_deny(object.union(tag, {"Destinations": {"app:1": null}}))) == 0
	count(_deny(object.union(tag, {"Peer": _admin}))) == 0
	some msg2 in _deny(_req(_bob, "POST", "/build", {"Destinations": {"busybox:latest": _unowned("image")}}))
	startswith(msg2, "image name busybox:latest is held by an image you cannot change")
}
