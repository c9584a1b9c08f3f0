package dsfw.library.namespaces_test

import rego.v1

_create(hc) := {"Method": "POST", "PathPlain": "/containers/create", "Query": {}, "Body": {"Image": "busybox", "HostConfig": hc}}

_deny(inp) := d if d := data.dsfw.library.namespaces.deny with input as inp with data.library as {}

test_default_namespaces_pass if {
	count(_deny(_create({"NetworkMode": "default", "PidMode": "", "IpcMode": "private"}))) == 0
	count(_deny(_create({"NetworkMode": "my-net"}))) == 0
}

test_host_namespaces_refused if {
	_deny(_create({"PidMode": "host"})) == {"the host's pid namespace is not allowed: drop --pid host (HostConfig.PidMode)"}
	_deny(_create({"NetworkMode": "HOST"})) == {"the host's network namespace is not allowed: drop --network host (HostConfig.NetworkMode)"}
	count(_deny(_create({"IpcMode": "host", "UTSMode": "host", "UsernsMode": "host", "CgroupnsMode": "host"}))) == 4
}

test_allowed_host_namespace if {
	count(data.dsfw.library.namespaces.deny) == 0 with input as _create({"NetworkMode": "host"}) with data.library as {"namespaces": {"allowed_host_namespaces": ["network"]}}
}

test_container_joins if {
	_deny(_create({"PidMode": "container:web"})) == {"joining another container's pid namespace is not allowed: drop --pid container:web"}
	count(data.dsfw.library.namespaces.deny) == 0 with input as _create({"NetworkMode": "container:web"}) with data.library as {"namespaces": {"allow_container_joins": true}}
}

test_host_network_endpoint if {
	_deny({"Method": "POST", "PathPlain": "/containers/create", "Query": {}, "Body": {"NetworkingConfig": {"EndpointsConfig": {"host": {}}}}}) == {"the host's network namespace is not allowed: do not attach the container to the host network"}
	_deny({"Method": "POST", "PathPlain": "/networks/host/connect", "Query": {}, "Body": {"Container": "c"}}) == {"the host's network namespace is not allowed: do not connect containers to the host network"}
}

test_build_on_host_network if {
	_deny({"Method": "POST", "PathPlain": "/build", "Query": {"networkmode": ["host"]}}) == {"building on the host's network is not allowed: drop --network host from docker build"}
	count(_deny({"Method": "POST", "PathPlain": "/build", "Query": {"networkmode": ["default"]}})) == 0
}

test_exempt if {
	count(data.dsfw.library.namespaces.deny) == 0 with input as object.union(_create({"PidMode": "host"}), {"Peer": {"User": "ops", "Uid": 1, "Group": "ops", "Gid": 1}})
		with data.library as {"namespaces": {"exempt": {"users": ["ops"]}}}
}

test_config_problems if {
	"dsfw library: data.library.namespaces.allow_container_joins must be a bool; fix data.yaml" in data.dsfw.library.namespaces.deny with input as _create({}) with data.library as {"namespaces": {"allow_container_joins": "yes"}}
}

test_build_in_another_container if {
	_deny({"Method": "POST", "PathPlain": "/build", "Query": {"networkmode": ["container:web"]}}) == {"building in another container's network namespace is not allowed: drop --network container:web from docker build"}
	count(data.dsfw.library.namespaces.deny) == 0 with input as {"Method": "POST", "PathPlain": "/build", "Query": {"networkmode": ["container:web"]}} with data.library as {"namespaces": {"allow_container_joins": true}}
}

_service(body) := {"Method": "POST", "PathPlain": "/services/create", "Query": {}, "Body": body}

test_service_on_host_network if {
	_deny(_service({"TaskTemplate": {"Networks": [{"Target": "host"}]}})) == {"the host's network namespace is not allowed: drop --network host from the service"}
	some msg in _deny({"Method": "POST", "PathPlain": "/services/s1/update", "Query": {}, "Body": {"Networks": [{"Target": "Host"}]}})
	contains(msg, "host's network")
	_deny(_service({"TaskTemplate": {"Networks": [{"Target": "2ca9c9"}]}})) == {"service network 2ca9c9 looks like a network ID, which could be the host network's: name the network by its name"}
	count(_deny(_service({"TaskTemplate": {"Networks": [{"Target": "backend"}]}}))) == 0
	count(data.dsfw.library.namespaces.deny) == 0 with input as _service({"TaskTemplate": {"Networks": [{"Target": "host"}]}}) with data.library as {"namespaces": {"allowed_host_namespaces": ["network"]}}
}
