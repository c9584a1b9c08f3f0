# Per-caller rules: some actions only for some callers.
#
# input.Peer is who connected to dsfw's socket (SO_PEERCRED): User/Uid and
# the primary Group/Gid of the calling process (supplementary groups are not
# seen). A request without Peer (not over a UNIX socket) matches nobody.
#
# data.library.callers: for each action listed, only the callers named may do it;
# actions not listed are not restricted here.
#   build: {groups: [ci]}          # POST /build
#   exec: {users: [root]}          # POST /containers/{id}/exec
#   pull: {...}                    # POST /images/create
#   create: {...}                  # POST /containers/create
#   network: {...}                 # POST /networks/create, connect, disconnect; DELETE /networks/{id}
#   volume: {...}                  # POST /volumes/create, DELETE /volumes/{name}
#   delete: {...}                  # any DELETE
# Each value is {users: [names], groups: [names], uids: [numbers], gids: [numbers]}.
# To let only some callers use privileged-adjacent settings, give the other
# library policies an `exempt` entry of the same form instead
# (data.library.privileged.exempt, .mounts.exempt, .namespaces.exempt).
package dsfw.library.callers

import rego.v1

import data.dsfw.library.common

_name := "callers"

# action → [methods, path pattern, what the docker CLI calls it]
_actions := {
	"build": [["POST"], `^/build$`, "docker build"],
	"exec": [["POST"], `^/containers/[^/]+/exec$`, "docker exec"],
	"pull": [["POST"], `^/images/create$`, "docker pull"],
	"create": [["POST"], `^/containers/create$`, "docker create/run"],
	"network": [["POST", "DELETE"], `^/networks/(create|[^/]+/connect|[^/]+/disconnect|[^/]+)$`, "changing networks"],
	"volume": [["POST", "DELETE"], `^/volumes/(create|[^/]+)$`, "creating or removing volumes"],
	"delete": [["DELETE"], `^/.*$`, "removing objects"],
}

_schema := {action: "object" | some action, _ in _actions}

deny contains msg if some msg in data.dsfw.library.common.config_problems(_name, _schema)

deny contains msg if {
	some action, [methods, pattern, what] in _actions
	spec := data.dsfw.library.common.config(_name)[action]
	is_object(spec)
	input.Method in methods
	regex.match(pattern, input.PathPlain)
	not data.dsfw.library.common.caller_in(spec)
	msg := sprintf("%s is reserved to %s; you are %s (data.library.callers.%s)", [what, data.dsfw.library.common.callers_named(spec), common.caller, action])
}
