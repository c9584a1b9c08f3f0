# Network creation rules: allowed drivers, allowed names, allowed driver options.
#
# data.library.network:
#   allowed_drivers: [bridge]        # default [bridge]; [] forbids creating networks
#   name_patterns: ["ci-.*"]         # regular expressions the whole name must match; [] = any name
#   allowed_options: []              # driver option keys allowed in -o/--opt (e.g. com.docker.network.driver.mtu)
#   exempt: {users: [], groups: [], uids: [], gids: []}
package dsfw.library.network

import rego.v1

_name := "network"

_schema := {"allowed_drivers": "list", "name_patterns": "list", "allowed_options": "list", "exempt": "object"}

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
