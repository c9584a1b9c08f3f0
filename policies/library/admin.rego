# Who may read dsfw's own endpoints: /_dsfw/health and /_dsfw/metrics are
# decided like any request, then answered by dsfw (never forwarded).
#
# data.library.admin:
#   health: {...}     # callers who may read /_dsfw/health (default: everyone)
#   metrics: {...}    # callers who may read /_dsfw/metrics (default: {uids: [0]}, root)
# Each value is {users: [names], groups: [names], uids: [numbers], gids: [numbers]}.
# Both bases (allow_all.rego, readonly.rego) allow the two endpoints; this
# file narrows them.
package dsfw.library.admin

import rego.v1

import data.dsfw.library.common

_name := "admin"

_endpoints := {"health": "/_dsfw/health", "metrics": "/_dsfw/metrics"}

_defaults := {"metrics": {"uids": [0]}}

_schema := {"health": "object", "metrics": "object"}

deny contains msg if some msg in data.dsfw.library.common.config_problems(_name, _schema)

deny contains msg if {
	some endpoint, path in _endpoints
	input.PathPlain == path
	spec := data.dsfw.library.common.setting(_name, endpoint, object.get(_defaults, endpoint, null))
	spec != null
	not data.dsfw.library.common.caller_in(spec)
	msg := sprintf("dsfw %s is reserved to %s; you are %s (data.library.admin.%s)", [endpoint, data.dsfw.library.common.callers_named(spec), common.caller, endpoint])
}
