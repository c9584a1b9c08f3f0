# No host bind mounts outside an allowlist of host paths.
#
# Uses the derived input.BindMounts: every host path the request would mount
# (-v /x:/y, --mount type=bind, local volumes with a device option, swarm
# service mounts, legacy start bodies), cleaned and with symlinks resolved on
# the dsfw host. So write allowed_host_paths as resolved paths (/run, not
# /var/run when /var/run is a link to /run).
#
# data.library.mounts:
#   allowed_host_paths: [/srv/shared, /tmp/builds]   # each allows itself and everything below
#   exempt: {users: [], groups: [], uids: [], gids: []}
package dsfw.library.mounts

import rego.v1

_name := "mounts"

_schema := {"allowed_host_paths": "list", "exempt": "object"}

deny contains msg if some msg in data.dsfw.library.common.config_problems(_name, _schema)

_allowed := [_strip(p) | some p in data.dsfw.library.common.list_setting(_name, "allowed_host_paths"); is_string(p); startswith(p, "/")]

# "/srv/x/" and "/srv/x" mean the same directory; "/" stays "/".
_strip(p) := p if p == "/"

_strip(p) := trim_right(p, "/") if p != "/"

_under(_, allowed) if allowed == "/"

_under(path, allowed) if path == allowed

_under(path, allowed) if startswith(path, concat("", [allowed, "/"]))

_allowed_text := concat(", ", _allowed) if count(_allowed) > 0

_allowed_text := "none (use a named volume)" if count(_allowed) == 0

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some path in input.BindMounts
	not _permitted(path)
	msg := sprintf("host path %s cannot be mounted into a container: use a named volume or a path under an allowed host path (allowed: %s)", [path, _allowed_text])
}

_permitted(path) if {
	some allowed in _allowed
	_under(path, allowed)
}
