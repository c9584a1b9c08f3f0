# The bases and collectors: allow_all.rego, readonly.rego, collect.rego, collect_build.rego.
# All library files are loaded together here (readonly.rego included), so
# these tests look at the parts, not at the combined verdict.
package dsfw.library.bases_test

import rego.v1

_get(path) := {"Method": "GET", "PathPlain": path, "Query": {}, "BindMounts": [], "CapAdd": [], "CapDrop": [], "Privileged": false}

test_collect_gathers_library_messages if {
	inp := {"Method": "POST", "PathPlain": "/containers/create", "Query": {}, "Body": {"Image": "evil/x", "HostConfig": {"PidMode": "host"}}, "BindMounts": ["/etc"], "CapAdd": ["CAP_SYS_ADMIN"], "Privileged": true}
	d := data.docker.authz.deny with input as inp with data.library as {"enabled": true, "images": {"allowed": ["busybox"]}}
	some m1 in d
	contains(m1, "evil/x")
	some m2 in d
	startswith(m2, "privileged containers are not allowed")
	some m3 in d
	startswith(m3, "host path /etc")
	some m4 in d
	startswith(m4, "the host's pid namespace")
	some m5 in d
	startswith(m5, "capability CAP_SYS_ADMIN")
}

test_collect_network_and_callers if {
	inp := {"Method": "POST", "PathPlain": "/networks/create", "Query": {}, "Body": {"Name": "n", "Driver": "macvlan"}}
	d := data.docker.authz.deny with input as inp with data.library as {"enabled": true, "callers": {"network": {}}}
	some m1 in d
	startswith(m1, "network driver macvlan")
	some m2 in d
	startswith(m2, "changing networks is reserved to nobody")
}

test_collect_plugins_swarm_users if {
	plugin := {"Method": "POST", "PathPlain": "/plugins/create", "Query": {"name": ["p"]}}
	some m1 in data.docker.authz.deny with input as plugin with data.library as {"enabled": true}
	startswith(m1, "docker plugin create is not allowed")
	some m2 in data.docker.authz.deny with input as {"Method": "GET", "PathPlain": "/swarm", "Query": {}} with data.library as {"enabled": true}
	startswith(m2, "swarm management is not allowed")
	root := {"Method": "POST", "PathPlain": "/containers/create", "Query": {}, "Body": {"Image": "busybox", "User": "0"}, "BindMounts": [], "CapAdd": [], "Privileged": false}
	some m3 in data.docker.authz.deny with input as root with data.library as {"enabled": true}
	startswith(m3, "running a container as root")
	start := {"Method": "POST", "PathPlain": "/containers/c/start", "Route": "/containers/{id}/start", "Query": {}, "Target": {"Kind": "container", "Name": "c", "HostConfig": {"Privileged": true}}, "BindMounts": [], "CapAdd": [], "Privileged": false}
	some m4 in data.docker.authz.deny with input as start with data.library as {"enabled": true}
	startswith(m4, "container c was created with settings you may not use")
}

test_allow_all_base if {
	data.docker.authz.allow with input as {"Method": "POST", "PathPlain": "/containers/create", "Query": {}} with data.library as {"enabled": true}
}

# Loaded as a subdirectory (policies/library below policies/), the data lands
# at data.library.library and nothing of the library decides.
test_inert_unless_enabled if {
	inp := {"Method": "POST", "PathPlain": "/containers/create", "Query": {}, "Body": {"Image": "evil/x"}, "Privileged": true, "BindMounts": [], "CapAdd": []}
	not data.docker.authz.allow with input as inp with data.library as {"library": {"enabled": true}}
	count(data.docker.authz.deny) == 0 with input as inp with data.library as {"library": {"enabled": true}}
	not data.docker.build.allow with input as {"ExternalImages": ["evil"]} with data.library as {}
	count(data.docker.build.deny) == 0 with input as {"ExternalImages": ["evil"]} with data.library as {}
}

test_build_base_and_collector if {
	data.docker.build.allow with input as {"ExternalImages": ["evil"]} with data.library as {"enabled": true}
	count(data.docker.build.deny) == 0 with input as {"ExternalImages": ["busybox"]} with data.library as {"enabled": true, "images": {"allowed": ["busybox"]}}
	some msg in data.docker.build.deny with input as {"ExternalImages": ["evil"]} with data.library as {"enabled": true, "images": {"allowed": ["busybox"]}}
	contains(msg, "evil")
}

test_readonly_allows_reads if {
	every path in ["/_ping", "/version", "/info", "/events", "/system/df", "/containers/json", "/containers/abc/json", "/containers/abc/logs", "/images/json", "/images/docker.io/library/busybox/json", "/networks", "/networks/n1", "/volumes", "/volumes/v1", "/services", "/tasks/t1/logs"] {
		data.docker.authz.readonly_request with input as _get(path) with data.library as {"enabled": true}
	}
	data.docker.authz.allow with input as _get("/containers/json") with data.library as {"enabled": true}
	data.docker.authz.readonly_request with input as object.union(_get("/_ping"), {"Method": "HEAD"}) with data.library as {"enabled": true}
}

test_readonly_refuses_writes_and_leaky_reads if {
	every inp in [
		{"Method": "POST", "PathPlain": "/containers/create", "Query": {}},
		{"Method": "DELETE", "PathPlain": "/containers/abc", "Query": {}},
		_get("/containers/abc/archive"),
		_get("/containers/abc/export"),
		_get("/images/get"),
		_get("/swarm"),
		object.union(_get("/containers/abc/json"), {"Upgrade": "tcp"}),
	] {
		not data.docker.authz.readonly_request with input as inp with data.library as {"enabled": true}
	}
	msg := "read-only profile: POST /containers/create is not allowed; this socket only serves GET/HEAD on list/inspect/logs/events/version/info/_ping (sections: containers, events, images, info, networks, ping, swarm, system, version, volumes)"
	msg in data.docker.authz.deny with input as {"Method": "POST", "PathPlain": "/containers/create", "Query": {}} with data.library as {"enabled": true}
}

test_readonly_sections if {
	not data.docker.authz.readonly_request with input as _get("/containers/json") with data.library as {"enabled": true, "readonly": {"sections": ["ping"]}}
	data.docker.authz.readonly_request with input as _get("/_ping") with data.library as {"enabled": true, "readonly": {"sections": ["ping"]}}
	"dsfw library: unknown section nope in data.library.readonly.sections (known: containers, events, images, info, networks, ping, swarm, system, version, volumes); fix data.yaml" in data.docker.authz.deny with input as _get("/_ping") with data.library as {"enabled": true, "readonly": {"sections": ["nope"]}}
	"dsfw library: data.library.readonly.sections must be a list; fix data.yaml" in data.docker.authz.deny with input as _get("/_ping") with data.library as {"enabled": true, "readonly": {"sections": "ping"}}
}
