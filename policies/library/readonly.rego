# The read-only profile: an alternative base for monitoring tools (the most
# common use of docker-socket-proxy). Only GET/HEAD on list, inspect, logs,
# events, version, info and _ping endpoints; every write is refused, and so
# are reads that hand out more than status: container archives and exports
# (GET /containers/{id}/archive, /export), image tarballs (GET /images/get),
# websocket attach, swarm join tokens (GET /swarm).
#
# Use it INSTEAD of allow_all.rego: allow is true only for those reads, so
# the profile holds even without the other library files. (Loaded next to
# allow_all.rego it still refuses writes, through its deny message.)
#
# data.library.readonly:
#   sections: [ping, version, info, events, containers, images, networks, volumes, system, swarm]
#             (default: all of them; list fewer to expose less)
package docker.authz

import rego.v1

import data.dsfw.library.common

# section → patterns of PathPlain readable in it
readonly_sections := {
	"ping": [`^/_ping$`],
	"version": [`^/version$`],
	"info": [`^/info$`],
	"events": [`^/events$`],
	"system": [`^/system/df$`],
	"containers": [`^/containers/json$`, `^/containers/[^/]+/(json|logs|top|stats|changes)$`],
	"images": [`^/images/json$`, `^/images/.+/(json|history)$`],
	"networks": [`^/networks$`, `^/networks/[^/]+$`],
	"volumes": [`^/volumes$`, `^/volumes/[^/]+$`],
	"swarm": [`^/(services|tasks|nodes)$`, `^/(services|tasks|nodes)/[^/]+$`, `^/services/[^/]+/logs$`, `^/tasks/[^/]+/logs$`],
}

_readonly_setting := v if {
	v := data.library.readonly.sections
	is_array(v)
} else := object.keys(readonly_sections)

readonly_request if {
	input.Method in {"GET", "HEAD"}
	not input.Upgrade
	some section in _readonly_setting
	some pattern in object.get(readonly_sections, section, [])
	regex.match(pattern, input.PathPlain)
}

# dsfw's own endpoints (answered by dsfw; admin.rego says who may read them)
readonly_request if {
	input.Method in {"GET", "HEAD"}
	input.PathPlain in {"/_dsfw/health", "/_dsfw/metrics"}
}

allow if {
	common.enabled
	readonly_request
}

deny contains msg if {
	common.enabled
	not readonly_request
	msg := sprintf("read-only profile: %s %s is not allowed; this socket only serves GET/HEAD on list/inspect/logs/events/version/info/_ping (sections: %s)", [input.Method, input.PathPlain, concat(", ", sort(_readonly_setting))])
}

deny contains msg if {
	common.enabled
	data.library.readonly.sections
	not is_array(data.library.readonly.sections)
	msg := "dsfw library: data.library.readonly.sections must be a list; fix data.yaml"
}

deny contains msg if {
	common.enabled
	some section in _readonly_setting
	not readonly_sections[section]
	msg := sprintf("dsfw library: unknown section %v in data.library.readonly.sections (known: %s); fix data.yaml", [section, concat(", ", sort(object.keys(readonly_sections)))])
}
