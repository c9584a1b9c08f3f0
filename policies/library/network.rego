# Network creation rules: allowed drivers, allowed names, allowed driver options,
# IPAM drivers, host interfaces.
#
# data.library.network:
#   allowed_drivers: [bridge]        # default [bridge]; [] forbids creating networks
#   name_patterns: ["ci-.*"]         # regular expressions the whole name must match; [] = any name
#   allowed_options: []              # driver option keys allowed in -o/--opt (e.g. com.docker.network.driver.mtu)
#   allowed_ipam_drivers: []         # --ipam-driver besides dockerd's own (default, null)
#   allowed_interfaces: []           # host interfaces -o parent= / bridge.name may name, e.g. [br-ci]
#   allow_config_from: false         # --config-from: options taken from another network
#   exempt: {users: [], groups: [], uids: [], gids: []}
package dsfw.library.network

import rego.v1

_name := "network"

_schema := {
	"allowed_drivers": "list", "name_patterns": "list", "allowed_options": "list",
	"allowed_ipam_drivers": "list", "allowed_interfaces": "list", "allow_config_from": "bool",
	"exempt": "object",
}

deny contains msg if some msg in data.dsfw.library.common.config_problems(_name, _schema)

_create if {
	input.Method == "POST"
	input.PathPlain == "/networks/create"
}

_body := b if {
	b := input.Body
	is_object(b)
} else := {}

# dockerd's default driver is bridge.
_driver := d if {
	d := object.get(_body, "Driver", "")
	d != ""
} else := "bridge"

_drivers := [d | some d in _drivers_setting; is_string(d)]

_drivers_setting := v if {
	v := data.dsfw.library.common.setting(_name, "allowed_drivers", ["bridge"])
	is_array(v)
} else := []

_drivers_text := concat(", ", _drivers) if count(_drivers) > 0

_drivers_text := "none: creating networks is not allowed" if count(_drivers) == 0

deny contains msg if {
	_create
	not data.dsfw.library.common.exempt(_name)
	not _driver in _drivers
	msg := sprintf("network driver %s is not allowed (docker network create --driver %s); allowed drivers: %s", [_driver, _driver, _drivers_text])
}

_patterns := [p | some p in data.dsfw.library.common.list_setting(_name, "name_patterns"); is_string(p)]

deny contains msg if {
	_create
	not data.dsfw.library.common.exempt(_name)
	count(_patterns) > 0
	name := object.get(_body, "Name", "")
	not _name_ok(name)
	msg := sprintf("network name %s is not allowed: choose a name matching one of %s", [name, concat(", ", _patterns)])
}

_name_ok(name) if {
	some p in _patterns
	regex.match(concat("", ["^(?:", p, ")$"]), name)
}

deny contains msg if {
	_create
	not data.dsfw.library.common.exempt(_name)
	some key, _ in object.get(_body, "Options", {})
	not key in data.dsfw.library.common.list_setting(_name, "allowed_options")
	msg := sprintf("network driver option %s is not allowed: drop --opt %s (or add it to data.library.network.allowed_options)", [key, key])
}

# An IPAM driver other than libnetwork's own is a plugin: its code picks the
# addresses and gateways, with a plugin's host privileges.
_builtin_ipam := {"", "default", "null"}

deny contains msg if {
	_create
	not data.dsfw.library.common.exempt(_name)
	ipam := object.get(_body, ["IPAM", "Driver"], "")
	not ipam in _builtin_ipam
	not ipam in data.dsfw.library.common.list_setting(_name, "allowed_ipam_drivers")
	msg := sprintf("IPAM driver %v is not allowed: drop --ipam-driver %v (dockerd's default IPAM needs none; or set data.library.network.allowed_ipam_drivers)", [ipam, ipam])
}

# Options whose value is a host interface: macvlan's and ipvlan's parent puts
# the network on the host's link (its LAN, its VLANs: eth0.100 is made on
# eth0), and a bridge named after an existing host bridge (br0, virbr0,
# docker0's kin) is taken over as it is. Judged by value even when the key
# is in allowed_options: only interfaces in allowed_interfaces may be named.
_interface_options := {"parent", "com.docker.network.bridge.name"}

deny contains msg if {
	_create
	not data.dsfw.library.common.exempt(_name)
	some key, value in object.get(_body, "Options", {})
	key in _interface_options
	not value in data.dsfw.library.common.list_setting(_name, "allowed_interfaces")
	msg := sprintf("host interface %v is not allowed: drop --opt %v=%v (a network on a host interface reaches the host's own link; or add it to data.library.network.allowed_interfaces)", [value, key, value])
}

# --config-from takes the driver options of a config-only network, which this
# request does not show (an admin's parent=eth0, say).
deny contains msg if {
	_create
	not data.dsfw.library.common.exempt(_name)
	from := object.get(_body, ["ConfigFrom", "Network"], "")
	from != ""
	not data.dsfw.library.common.setting(_name, "allow_config_from", false) == true
	msg := sprintf("networks made from another network's configuration are not allowed: drop --config-from %v (its options are not in this request; or set data.library.network.allow_config_from)", [from])
}
