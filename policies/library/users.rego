# No container, exec or service task runs as root, in any spelling.
#
# dockerd resolves User as libcontainer's GetExecUser does: "user[:group]"
# (more ":" parts are ignored), a name looked up in the image's /etc/passwd,
# or a number read by Go's strconv.Atoi -- so "0", "00", "+0" and "-0" are
# all uid 0, and "root", "0:0", "root:root", "1000:0" ask for uid or gid 0.
# HostConfig.GroupAdd and a service's Groups are read the same way.
#
# An empty User means the image's USER, which dsfw does not see and which
# is root for most images (busybox, alpine, ...): allowed unless
# require_user is set, so an ordinary `docker run` keeps working. A name
# other than "root" that an image maps to uid 0 is not recognized.
#
# data.library.users:
#   allow_root: false     # true switches this policy off
#   require_user: false   # true: an empty User (the image's default) is refused too
#   exempt: {users: [], groups: [], uids: [], gids: []}
package dsfw.library.users

import rego.v1

import data.dsfw.library.common

_name := "users"

_schema := {"allow_root": "bool", "require_user": "bool", "exempt": "object"}

deny contains msg if some msg in data.dsfw.library.common.config_problems(_name, _schema)

_active if {
	not data.dsfw.library.common.exempt(_name)
	not data.dsfw.library.common.setting(_name, "allow_root", false) == true
}

# [the User value, what asks for it, the flag that sets it]
_users contains [object.get(input.Body, "User", ""), "container", "docker run -u"] if common.container_create

_users contains [object.get(input.Body, "User", ""), "exec", "docker exec -u"] if {
	input.Method == "POST"
	data.dsfw.library.common.one_segment(input.PathPlain, "/containers/", "/exec")
}

_users contains [object.get(common.container_spec, "User", ""), "service", "docker service create -u"] if {
	common.service_request
	is_object(input.Body.TaskTemplate.ContainerSpec)
}

_groups contains [g, "HostConfig.GroupAdd", "--group-add"] if {
	common.container_create
	some g in object.get(common.host_config, "GroupAdd", [])
}

_groups contains [g, "ContainerSpec.Groups", "--group"] if {
	common.service_request
	some g in object.get(common.container_spec, "Groups", [])
}

# uid or gid 0 as a name or as a number strconv.Atoi reads as 0.
_root(word) if word == "root"

_root(word) if data.dsfw.library.common.only_of(word, "0") # `^[+-]?0+$`

_root(word) if {
	some sign in ["+", "-"]
	startswith(word, sign)
	data.dsfw.library.common.only_of(substring(word, 1, -1), "0")
}

deny contains msg if {
	_active
	some [spec, what, flag] in _users
	is_string(spec)
	_root(split(spec, ":")[0])
	msg := sprintf("running a %s as root is not allowed: user \"%s\" is uid 0; give %s a non-root user (such as %s 1000)", [what, spec, flag, flag])
}

deny contains msg if {
	_active
	some [spec, what, flag] in _users
	is_string(spec)
	parts := split(spec, ":")
	count(parts) > 1
	_root(parts[1])
	not _root(parts[0])
	msg := sprintf("running a %s with the root group is not allowed: user \"%s\" is gid 0; give %s a non-root group", [what, spec, flag])
}

deny contains msg if {
	_active
	some [group, field, flag] in _groups
	is_string(group)
	_root(group)
	msg := sprintf("the root group is not allowed: drop %s %s (%s)", [flag, group, field])
}

deny contains msg if {
	_active
	data.dsfw.library.common.setting(_name, "require_user", false) == true
	some [spec, what, flag] in _users
	is_string(spec)
	split(spec, ":")[0] == ""
	msg := sprintf("a %s must name its user: the image's default user is often root; give %s a non-root user (data.library.users.require_user)", [what, flag])
}
