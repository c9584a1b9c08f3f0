package dsfw.library.mounts_test

import rego.v1

_in(mounts) := {"Method": "POST", "PathPlain": "/containers/create", "Query": {}, "Body": {}, "BindMounts": mounts}

_deny(mounts) := d if d := data.dsfw.library.mounts.deny with input as _in(mounts) with data.library as {"mounts": {"allowed_host_paths": ["/srv/shared/", "/tmp/builds"]}}

test_allowed_paths_pass if {
	count(_deny(["/srv/shared", "/srv/shared/a/b", "/tmp/builds/x"])) == 0
	count(_deny([])) == 0
}

test_other_host_paths_refused if {
	_deny(["/etc"]) == {"host path /etc cannot be mounted into a container: use a named volume or a path under an allowed host path (allowed: /srv/shared, /tmp/builds)"}
	count(_deny(["/srv/sharedx", "/srv", "/"])) == 3
}

test_nothing_allowed_by_default if {
	data.dsfw.library.mounts.deny == {"host path /tmp cannot be mounted into a container: use a named volume or a path under an allowed host path (allowed: none (use a named volume))"} with input as _in(["/tmp"]) with data.library as {}
}

test_root_allows_everything if {
	count(data.dsfw.library.mounts.deny) == 0 with input as _in(["/etc"]) with data.library as {"mounts": {"allowed_host_paths": ["/"]}}
}

test_exempt_uid if {
	count(data.dsfw.library.mounts.deny) == 0 with input as object.union(_in(["/etc"]), {"Peer": {"Uid": 0, "User": "root", "Gid": 0, "Group": "root"}})
		with data.library as {"mounts": {"exempt": {"uids": [0]}}}
}

test_config_problems if {
	"dsfw library: unknown setting data.library.mounts.allowed (known: allow_restart_with_host_paths, allow_volumes_from, allowed_host_paths, allowed_volume_drivers, allowed_volume_types, exempt); fix data.yaml" in data.dsfw.library.mounts.deny with input as _in([]) with data.library as {"mounts": {"allowed": []}}
}

_with(facts, cfg) := d if d := data.dsfw.library.mounts.deny with input as object.union(_in([]), facts) with data.library as {"mounts": cfg}

test_symlinks_refused if {
	_with({"SymlinkMounts": [{"Path": "/tmp/x", "Resolved": "/etc"}]}, {"allowed_host_paths": ["/"]}) == {"host path /tmp/x is a symbolic link or passes through one (to /etc): name the real path; a link can be re-pointed after dsfw's check"}
}

test_local_volume_types if {
	tmpfs := {"Name": "v", "Type": "tmpfs", "Device": "tmpfs", "Options": "size=1m", "Bind": false, "Paths": []}
	count(_with({"LocalVolumes": [tmpfs]}, {})) == 0
	proc := {"Name": "v", "Type": "proc", "Device": "proc", "Options": "", "Bind": false, "Paths": []}
	_with({"LocalVolumes": [proc]}, {}) == {`local volume v of type "proc" is not allowed: it would mount "proc" from the host (allowed types: tmpfs)`}
	disk := {"Name": "", "Type": "ext4", "Device": "/dev/sda1", "Options": "", "Bind": false, "Paths": ["/dev/sda1"]}
	some msg in _with({"LocalVolumes": [disk]}, {"allowed_volume_types": []})
	contains(msg, `local volume of type "ext4" is not allowed`)
	count(_with({"LocalVolumes": [disk]}, {"allowed_volume_types": ["ext4"]})) == 0
	bind := {"Name": "v", "Type": "none", "Device": "/srv/shared", "Options": "bind", "Bind": true, "Paths": ["/srv/shared"]}
	count(_with({"LocalVolumes": [bind]}, {})) == 0
}

test_relative_volume_paths if {
	rel := {"Name": "v", "Type": "none", "Device": "etc", "Options": "bind", "Bind": true, "Paths": ["etc"]}
	_with({"LocalVolumes": [rel]}, {}) == {`local volume v names the relative host path "etc", which dockerd resolves against its own working directory: use an absolute path`}
}

test_volumes_from if {
	inp := {"Method": "POST", "PathPlain": "/containers/create", "Query": {}, "Body": {"HostConfig": {"VolumesFrom": ["data:ro"]}}, "BindMounts": []}
	data.dsfw.library.mounts.deny == {"--volumes-from data:ro is not allowed: it mounts whatever that container mounts (or set data.library.mounts.allow_volumes_from)"} with input as inp with data.library as {}
	count(data.dsfw.library.mounts.deny) == 0 with input as inp with data.library as {"mounts": {"allow_volumes_from": true}}
}

test_restart_policies_with_host_paths if {
	create := {"Method": "POST", "PathPlain": "/containers/create", "Query": {}, "Body": {"HostConfig": {"RestartPolicy": {"Name": "always"}}}, "BindMounts": ["/srv/shared"]}
	_with(create, {"allowed_host_paths": ["/srv/shared"]}) == {"restart policy always is not allowed with host paths (/srv/shared): dockerd would mount them again on its own, without dsfw's check; drop --restart or the host paths"}
	count(_with(create, {"allowed_host_paths": ["/srv/shared"], "allow_restart_with_host_paths": true})) == 0
	count(_with(object.union(create, {"Body": {"HostConfig": {"RestartPolicy": {"Name": "no"}}}}), {"allowed_host_paths": ["/srv/shared"]})) == 0
	count(_with(object.union(create, {"BindMounts": []}), {})) == 0
	update := {"Method": "POST", "PathPlain": "/containers/web/update", "Query": {}, "Body": {"RestartPolicy": {"Name": "unless-stopped"}}, "BindMounts": [], "Target": {"Kind": "container", "Mounts": [{"Type": "bind", "Source": "/srv/shared"}, {"Type": "volume", "Name": "v"}]}}
	some msg in _with(update, {"allowed_host_paths": ["/srv/shared"]})
	startswith(msg, "restart policy unless-stopped is not allowed with host paths (/srv/shared)")
	service := {"Method": "POST", "PathPlain": "/services/create", "Query": {}, "Body": {"TaskTemplate": {"ContainerSpec": {}}}, "BindMounts": ["/srv/shared"]}
	some msg2 in _with(service, {"allowed_host_paths": ["/srv/shared"]})
	startswith(msg2, "restart policy any is not allowed")
	count(_with(object.union(service, {"Body": {"TaskTemplate": {"RestartPolicy": {"Condition": "none"}}}}), {"allowed_host_paths": ["/srv/shared"]})) == 0
}

_route(method, route, query, body) := {"Method": method, "Route": route, "PathPlain": "/containers/c/x", "Query": query, "Body": body, "BindMounts": []}

test_checkpoint_directories_are_refused if {
	d1 := data.dsfw.library.mounts.deny with input as _route("POST", "/containers/{id}/checkpoints", {}, {"CheckpointID": "c", "cHEC\u212apointdir": "/etc"}) with data.library as {}
	d1 == {"checkpoint directories are host paths that cannot be judged (/etc): drop --checkpoint-dir and use dockerd's default"}
	count(data.dsfw.library.mounts.deny) == 1 with input as _route("POST", "/containers/{id}/start", {"checkpoint": ["c"], "checkpoint-dir": ["/tmp/x"]}, null) with data.library as {}
	count(data.dsfw.library.mounts.deny) == 1 with input as _route("DELETE", "/containers/{id}/checkpoints/{checkpoint}", {"dir": ["/"]}, null) with data.library as {}
	count(data.dsfw.library.mounts.deny) == 1 with input as _route("GET", "/containers/{id}/checkpoints", {"dir": ["/root"]}, null) with data.library as {}
	count(data.dsfw.library.mounts.deny) == 0 with input as _route("POST", "/containers/{id}/checkpoints", {}, {"CheckpointID": "c"}) with data.library as {}
	count(data.dsfw.library.mounts.deny) == 0 with input as _route("POST", "/containers/{id}/start", {"checkpoint": ["c"]}, null) with data.library as {}
}

# A plugin's volume mounts what the plugin makes of its options: only local, or drivers allowed.
test_volume_drivers_other_than_local_refused if {
	_with({"VolumeDrivers": ["local", "hostpath"]}, {}) == {"volume driver hostpath is not allowed: a plugin's volume mounts whatever the plugin makes of its options, host paths included, which dsfw cannot judge; use the local driver (or set data.library.mounts.allowed_volume_drivers)"}
	count(_with({"VolumeDrivers": ["local"]}, {})) == 0
	count(_with({"VolumeDrivers": ["vieux/sshfs:latest", "hostpath"]}, {"allowed_volume_drivers": ["docker.io/vieux/sshfs", "hostpath"]})) == 0
	count(_with({"VolumeDrivers": ["vieux/sshfs:next"]}, {"allowed_volume_drivers": ["vieux/sshfs:latest"]})) == 1
	# an existing named volume a create mounts, made with a plugin
	count(_with({"Volumes": {"data": {"Kind": "volume", "Driver": "hostpath"}, "new": null}}, {})) == 1
	count(_with({"Volumes": {"data": {"Kind": "volume", "Driver": "local"}, "new": null}}, {})) == 0
}

# An update without a body sets no restart policy (dockerd refuses it): no evaluation error.
test_update_without_a_body if {
	count(data.dsfw.library.mounts.deny) == 0 with input as {"Method": "POST", "PathPlain": "/containers/web/update", "Route": "/containers/{id}/update", "Query": {}, "Body": null, "BindMounts": [], "Target": {"Kind": "container", "Mounts": [{"Type": "bind", "Source": "/srv"}]}} with data.library as {}
}
