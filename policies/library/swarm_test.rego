package dsfw.library.swarm_test

import rego.v1

_deny(method, path, cfg) := d if d := data.dsfw.library.swarm.deny with input as {"Method": method, "PathPlain": path, "Query": {}} with data.library as cfg

test_management_refused_by_default if {
	_deny("POST", "/swarm/init", {}) == {"swarm management is not allowed: docker swarm init (allow it with init in data.library.swarm.allowed_actions)"}
	every req in [["POST", "/swarm/join"], ["POST", "/swarm/update"], ["POST", "/swarm/unlock"], ["GET", "/swarm"], ["HEAD", "/swarm"], ["GET", "/swarm/unlockkey"], ["POST", "/nodes/n1/update"]] {
		count(_deny(req[0], req[1], {})) == 1
	}
	some msg in _deny("GET", "/swarm", {})
	contains(msg, "join tokens")
}

test_allowed_actions if {
	count(_deny("GET", "/swarm", {"swarm": {"allowed_actions": ["inspect"]}})) == 0
	count(_deny("POST", "/swarm/init", {"swarm": {"allowed_actions": ["inspect"]}})) == 1
}

test_other_requests_untouched if {
	every req in [["POST", "/swarm/leave"], ["GET", "/services"], ["GET", "/nodes"], ["GET", "/info"], ["POST", "/services/create"]] {
		count(_deny(req[0], req[1], {})) == 0
	}
}

test_exempt if {
	count(data.dsfw.library.swarm.deny) == 0 with input as {"Method": "POST", "PathPlain": "/swarm/init", "Query": {}, "Peer": {"User": "root", "Uid": 0, "Group": "root", "Gid": 0}}
		with data.library as {"swarm": {"exempt": {"uids": [0]}}}
}

test_config_problems if {
	"dsfw library: unknown action tokens in data.library.swarm.allowed_actions (known: init, inspect, join, node_update, unlock, unlock_key, update); fix data.yaml" in _deny("GET", "/_ping", {"swarm": {"allowed_actions": ["tokens"]}})
	"dsfw library: data.library.swarm.allowed_actions must be a list; fix data.yaml" in _deny("GET", "/_ping", {"swarm": {"allowed_actions": "init"}})
}
