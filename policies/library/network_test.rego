package dsfw.library.network_test

import rego.v1

_net(body) := {"Method": "POST", "PathPlain": "/networks/create", "Query": {}, "Body": body}

_deny(body, cfg) := d if d := data.dsfw.library.network.deny with input as _net(body) with data.library as {"network": cfg}

test_bridge_allowed_by_default if {
	count(_deny({"Name": "n1"}, {})) == 0
	count(_deny({"Name": "n1", "Driver": "bridge", "Options": {}}, {})) == 0
}

test_forbidden_driver if {
	_deny({"Name": "n1", "Driver": "macvlan"}, {}) == {"network driver macvlan is not allowed (docker network create --driver macvlan); allowed drivers: bridge"}
	count(_deny({"Name": "n1", "Driver": "overlay"}, {"allowed_drivers": ["bridge", "overlay"]})) == 0
}

test_no_drivers_no_networks if {
	_deny({"Name": "n1"}, {"allowed_drivers": []}) == {"network driver bridge is not allowed (docker network create --driver bridge); allowed drivers: none: creating networks is not allowed"}
}

test_name_patterns if {
	count(_deny({"Name": "ci-42"}, {"name_patterns": ["ci-[0-9]+", "dev-.*"]})) == 0
	_deny({"Name": "prod"}, {"name_patterns": ["ci-[0-9]+"]}) == {"network name prod is not allowed: choose a name matching one of ci-[0-9]+"}
	count(_deny({"Name": "xci-42"}, {"name_patterns": ["ci-[0-9]+"]})) == 1
}

test_options if {
	_deny({"Name": "n", "Options": {"com.docker.network.bridge.name": "docker0"}}, {}) == {
		"network driver option com.docker.network.bridge.name is not allowed: drop --opt com.docker.network.bridge.name (or add it to data.library.network.allowed_options)",
		"host interface docker0 is not allowed: drop --opt com.docker.network.bridge.name=docker0 (a network on a host interface reaches the host's own link; or add it to data.library.network.allowed_interfaces)",
	}
	count(_deny({"Name": "n", "Options": {"com.docker.network.driver.mtu": "1400"}}, {"allowed_options": ["com.docker.network.driver.mtu"]})) == 0
}

test_only_network_create if {
	count(data.dsfw.library.network.deny) == 0 with input as {"Method": "GET", "PathPlain": "/networks", "Query": {}} with data.library as {"network": {"allowed_drivers": []}}
}

test_exempt if {
	count(data.dsfw.library.network.deny) == 0 with input as object.union(_net({"Name": "n", "Driver": "host"}), {"Peer": {"User": "a", "Uid": 1, "Group": "netadm", "Gid": 7}})
		with data.library as {"network": {"exempt": {"gids": [7]}}}
}

test_config_problems if {
	"dsfw library: data.library.network.name_patterns must be a list; fix data.yaml" in _deny({"Name": "n"}, {"name_patterns": "ci-.*"})
}

test_ipam_drivers if {
	count(_deny({"Name": "n", "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.9.0.0/24"}]}}, {})) == 0
	count(_deny({"Name": "n", "IPAM": {"Driver": "null"}}, {})) == 0
	_deny({"Name": "n", "IPAM": {"Driver": "infoblox/ipam:1"}}, {}) == {"IPAM driver infoblox/ipam:1 is not allowed: drop --ipam-driver infoblox/ipam:1 (dockerd's default IPAM needs none; or set data.library.network.allowed_ipam_drivers)"}
	count(_deny({"Name": "n", "IPAM": {"Driver": "infoblox/ipam:1"}}, {"allowed_ipam_drivers": ["infoblox/ipam:1"]})) == 0
}

test_host_interfaces if {
	macvlan := {"allowed_drivers": ["bridge", "macvlan", "ipvlan"], "allowed_options": ["parent", "com.docker.network.bridge.name"]}
	_deny({"Name": "n", "Driver": "macvlan", "Options": {"parent": "eth0"}}, macvlan) == {"host interface eth0 is not allowed: drop --opt parent=eth0 (a network on a host interface reaches the host's own link; or add it to data.library.network.allowed_interfaces)"}
	count(_deny({"Name": "n", "Driver": "ipvlan", "Options": {"parent": "eth0.100"}}, macvlan)) == 1
	count(_deny({"Name": "n", "Options": {"com.docker.network.bridge.name": "br0"}}, macvlan)) == 1
	# without the key allowed, both the key and the interface are named
	count(_deny({"Name": "n", "Driver": "macvlan", "Options": {"parent": "eth0"}}, {"allowed_drivers": ["macvlan"]})) == 2
	count(_deny({"Name": "n", "Driver": "macvlan", "Options": {"parent": "eth0.100"}}, object.union(macvlan, {"allowed_interfaces": ["eth0.100"]}))) == 0
	# macvlan without a parent makes its own dummy link
	count(_deny({"Name": "n", "Driver": "macvlan", "Options": {}}, macvlan)) == 0
}

test_config_from if {
	_deny({"Name": "n", "Driver": "bridge", "ConfigFrom": {"Network": "admin-lan"}}, {}) == {"networks made from another network's configuration are not allowed: drop --config-from admin-lan (its options are not in this request; or set data.library.network.allow_config_from)"}
	count(_deny({"Name": "n", "Driver": "bridge", "ConfigFrom": {"Network": "admin-lan"}}, {"allow_config_from": true})) == 0
	count(_deny({"Name": "n", "ConfigFrom": {"Network": ""}}, {})) == 0
}
