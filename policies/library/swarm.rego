# Swarm management is reserved: init, join, update, unlock, reading the join
# and unlock keys, and changing nodes.
#
# A manager's join token lets another engine join and run tasks that this
# dsfw never sees; init/join/update change who can schedule work on this
# host. Services themselves are judged by the other library policies
# (images, mounts, privileged, namespaces, users, plugins) like containers.
#
# data.library.swarm:
#   allowed_actions: []   # any of init, join, update, unlock, inspect, unlock_key, node_update
#   exempt: {users: [], groups: [], uids: [], gids: []}
package dsfw.library.swarm

import rego.v1

_name := "swarm"

_schema := {"allowed_actions": "list", "exempt": "object"}

# action → [methods, path, what the docker CLI calls it]; a path [prefix, suffix]
# is prefix, one segment without "/", suffix (common.one_segment)
_actions := {
	"init": [["POST"], "/swarm/init", "docker swarm init"],
	"join": [["POST"], "/swarm/join", "docker swarm join"],
	"update": [["POST"], "/swarm/update", "docker swarm update (and join-token --rotate)"],
	"unlock": [["POST"], "/swarm/unlock", "docker swarm unlock"],
	"inspect": [["GET", "HEAD"], "/swarm", "reading the swarm and its join tokens (GET /swarm, docker swarm join-token)"],
	"unlock_key": [["GET", "HEAD"], "/swarm/unlockkey", "docker swarm unlock-key"],
	"node_update": [["POST"], ["/nodes/", "/update"], "docker node update/promote/demote"],
}

_path_is(path, want) if path == want

_path_is(path, want) if {
	is_array(want)
	data.dsfw.library.common.one_segment(path, want[0], want[1])
}

deny contains msg if some msg in data.dsfw.library.common.config_problems(_name, _schema)

deny contains msg if {
	some action in data.dsfw.library.common.list_setting(_name, "allowed_actions")
	not _actions[action]
	msg := sprintf("dsfw library: unknown action %v in data.library.swarm.allowed_actions (known: %s); fix data.yaml", [action, concat(", ", sort(object.keys(_actions)))])
}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some action, [methods, path, what] in _actions
	input.Method in methods
	_path_is(input.PathPlain, path)
	not action in data.dsfw.library.common.list_setting(_name, "allowed_actions")
	msg := sprintf("swarm management is not allowed: %s (allow it with %s in data.library.swarm.allowed_actions)", [what, action])
}
