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
	"dsfw library: unknown setting data.library.mounts.allowed (known: allowed_host_paths, exempt); fix data.yaml" in data.dsfw.library.mounts.deny with input as _in([]) with data.library as {"mounts": {"allowed": []}}
}
