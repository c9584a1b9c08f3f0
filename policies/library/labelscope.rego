# A label-scoped read-only profile: the shape a reverse proxy (Traefik) or a
# dashboard needs. The caller may list and inspect containers and follow
# events -- and sees only containers carrying one of the configured labels:
# others are missing from `docker ps`, from the event stream, and inspecting
# them answers dockerd's own "No such container". Inspect answers come
# without Config.Env (and the other fields in `remove`), so secrets passed
# as environment variables do not leak. Nothing else is allowed.
#
# Use it INSTEAD of allow_all.rego or readonly.rego (it is a base: allow is
# true only for its reads), and not with ownership.rego (both define
# data.docker.authz.visible).
#
# data.library.labelscope:
#   labels: ["traefik.enable=true"]   # "key" (any value) or "key=value"; a container needs one
#   remove: [Config.Env]              # fields removed from inspect answers (default Config.Env)
package docker.authz

import rego.v1

import data.dsfw.library.common

_labelscope_schema := {"labels": "list", "remove": "list"}

_labelscope_reads := {"/_ping", "/version", "/info", "/events", "/containers/json", "/containers/{id}/json"}

_labelscope_on if {
	common.enabled
	count(data.dsfw.library.common.list_setting("labelscope", "labels")) > 0
}

_labelscope_request if {
	input.Method in {"GET", "HEAD"}
	input.Route in _labelscope_reads
}

allow if {
	_labelscope_on
	_labelscope_request
}

deny contains msg if {
	_labelscope_on
	not _labelscope_request
	msg := sprintf("label-scoped read-only profile: %s %s is not allowed; this socket serves only ping, version, info, events and container list/inspect", [input.Method, input.PathPlain])
}

deny contains msg if {
	common.enabled
	some msg in data.dsfw.library.common.config_problems("labelscope", _labelscope_schema)
}

visible if {
	_labelscope_on
	input.Item.Kind == "container"
	some wanted in data.dsfw.library.common.list_setting("labelscope", "labels")
	_labelscope_has(input.Item.Labels, wanted)
}

_labelscope_has(labels, wanted) if {
	not contains(wanted, "=")
	labels[wanted]
}

_labelscope_has(labels, wanted) if {
	contains(wanted, "=")
	parts := split(wanted, "=")
	key := parts[0]
	labels[key] == substring(wanted, count(key) + 1, -1)
}

remove contains field if {
	_labelscope_on
	some field in data.dsfw.library.common.setting("labelscope", "remove", ["Config.Env"])
}
