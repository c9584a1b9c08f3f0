# Plugins only from an allowlist.
#
# A managed plugin runs as root with the privileges its config.json asks
# for (host network, host mounts, any capability, all devices): installing
# or enabling one is a create of a privileged container that no other
# policy sees. So every request that brings in, changes or starts a plugin
# names it, and the name must be allowed:
#   POST /plugins/pull?remote=R&name=N   docker plugin install (R and the local name N)
#   POST /plugins/{name}/upgrade?remote=R docker plugin upgrade (both names)
#   POST /plugins/{name}/set             docker plugin set (mount sources, device paths, env)
#   POST /plugins/{name}/enable          docker plugin enable (runs it)
#   POST /plugins/create?name=N          docker plugin create: a local tarball, refused
#                                        unless allow_create (its content is not tied to any name)
#   services whose TaskTemplate.PluginSpec installs a plugin on every node (name and remote)
# Names are read as dockerd reads them (vieux/sshfs = docker.io/vieux/sshfs:latest);
# all-hex names are refused, since dockerd also finds plugins by ID prefix.
#
# data.library.plugins:
#   allowed: []            # e.g. [vieux/sshfs, "registry.example.com/plugins/*"]
#   allow_create: false
#   exempt: {users: [], groups: [], uids: [], gids: []}
package dsfw.library.plugins

import rego.v1

import data.dsfw.library.common

_name := "plugins"

_schema := {"allowed": "list", "allow_create": "bool", "exempt": "object"}

deny contains msg if some msg in data.dsfw.library.common.config_problems(_name, _schema)

_post(path) if {
	input.Method == "POST"
	input.PathPlain == path
}

# The plugin name of POST /plugins/{name}{suffix} (`^/plugins/(.+){suffix}$`).
_post_named(suffix) := name if {
	input.Method == "POST"
	name := data.dsfw.library.common.between(input.PathPlain, "/plugins/", suffix, "\n")
}

# [plugin name, what the docker CLI calls the action]
_named contains [data.dsfw.library.common.query("remote"), "docker plugin install"] if _post("/plugins/pull")

_named contains [name, "docker plugin install --alias"] if {
	_post("/plugins/pull")
	name := data.dsfw.library.common.query("name")
	name != ""
}

_named contains [name, "docker plugin upgrade"] if name := _post_named("/upgrade")

_named contains [data.dsfw.library.common.query("remote"), "docker plugin upgrade"] if _post_named("/upgrade")

_named contains [name, "docker plugin set"] if name := _post_named("/set")

_named contains [name, "docker plugin enable"] if name := _post_named("/enable")

_named contains [data.dsfw.library.common.query("name"), "docker plugin create"] if _post("/plugins/create")

_named contains [ref, "service plugin"] if {
	common.service_request
	spec := input.Body.TaskTemplate.PluginSpec
	is_object(spec)
	some field in ["remote", "name"]
	ref := object.get(spec, field, "")
	ref != ""
}

_named contains ["", "service plugin"] if {
	common.service_request
	spec := input.Body.TaskTemplate.PluginSpec
	is_object(spec)
	object.get(spec, "remote", "") == ""
	object.get(spec, "name", "") == ""
}

_allowed := [e | some e in data.dsfw.library.common.list_setting(_name, "allowed"); is_string(e)]

_allowed_text := concat(", ", _allowed) if count(_allowed) > 0

_allowed_text := "none (data.library.plugins.allowed is empty)" if count(_allowed) == 0

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some [ref, what] in _named
	not _allowed_plugin(ref)
	msg := sprintf("plugin \"%s\" is not allowed (%s): a plugin runs as root with the privileges it asks for; allowed plugins: %s", [ref, what, _allowed_text])
}

_allowed_plugin(ref) if {
	ref != ""
	not data.dsfw.library.common.image_id(ref)
	img := data.dsfw.library.common.image_ref(ref)
	some entry in _allowed
	data.dsfw.library.common.image_allowed_by(img, entry)
}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	_post("/plugins/create")
	not data.dsfw.library.common.setting(_name, "allow_create", false) == true
	msg := "docker plugin create is not allowed: a plugin made from a local directory can ask for any privilege; install an allowed plugin instead (or set data.library.plugins.allow_create)"
}
