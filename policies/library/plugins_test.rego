package dsfw.library.plugins_test

import rego.v1

_req(path, query) := {"Method": "POST", "PathPlain": path, "Query": query, "Body": null}

_cfg := {"plugins": {"allowed": ["vieux/sshfs", "reg.io/plugins/*"]}}

_deny(inp) := d if d := data.dsfw.library.plugins.deny with input as inp with data.library as _cfg

_none(inp) := d if d := data.dsfw.library.plugins.deny with input as inp with data.library as {}

test_nothing_allowed_by_default if {
	_none(_req("/plugins/pull", {"remote": ["vieux/sshfs"]})) == {`plugin "vieux/sshfs" is not allowed (docker plugin install): a plugin runs as root with the privileges it asks for; allowed plugins: none (data.library.plugins.allowed is empty)`}
	some msg in _none(_req("/plugins/vieux/sshfs:latest/enable", {}))
	contains(msg, "(docker plugin enable)")
	some msg2 in _none(_req("/plugins/p/set", {}))
	contains(msg2, "(docker plugin set)")
	some msg3 in _none(_req("/plugins/p/upgrade", {"remote": ["p:2"]}))
	contains(msg3, "(docker plugin upgrade)")
}

test_allowed_plugins_pass if {
	count(_deny(_req("/plugins/pull", {"remote": ["docker.io/vieux/sshfs:latest"], "name": ["vieux/sshfs"]}))) == 0
	count(_deny(_req("/plugins/vieux/sshfs/enable", {"timeout": ["0"]}))) == 0
	count(_deny(_req("/plugins/reg.io/plugins/x:1/set", {}))) == 0
	count(_deny(_req("/plugins/vieux/sshfs/upgrade", {"remote": ["vieux/sshfs:next"]}))) == 0
}

test_alias_and_ids_refused if {
	some msg in _deny(_req("/plugins/pull", {"remote": ["vieux/sshfs"], "name": ["evil/x"]}))
	contains(msg, `plugin "evil/x" is not allowed (docker plugin install --alias)`)
	some msg2 in _deny(_req("/plugins/cafe12/enable", {}))
	contains(msg2, `plugin "cafe12"`)
	some msg3 in _deny(_req("/plugins/pull", {}))
	contains(msg3, `plugin ""`)
}

test_create_needs_allow_create if {
	_deny(_req("/plugins/create", {"name": ["vieux/sshfs"]})) == {"docker plugin create is not allowed: a plugin made from a local directory can ask for any privilege; install an allowed plugin instead (or set data.library.plugins.allow_create)"}
	count(data.dsfw.library.plugins.deny) == 0 with input as _req("/plugins/create", {"name": ["vieux/sshfs"]}) with data.library as {"plugins": {"allowed": ["vieux/sshfs"], "allow_create": true}}
}

test_service_plugins if {
	svc := {"Method": "POST", "PathPlain": "/services/create", "Query": {}, "Body": {"TaskTemplate": {"Runtime": "plugin", "PluginSpec": {"name": "evil/p", "remote": "evil/p:1"}}}}
	count(_deny(svc)) == 2
	empty := {"Method": "POST", "PathPlain": "/services/s1/update", "Query": {}, "Body": {"TaskTemplate": {"PluginSpec": {}}}}
	some msg in _deny(empty)
	contains(msg, "(service plugin)")
	count(_deny({"Method": "POST", "PathPlain": "/services/create", "Query": {}, "Body": {"TaskTemplate": {"PluginSpec": {"remote": "vieux/sshfs"}}}})) == 0
}

test_other_plugin_requests_untouched if {
	count(_none({"Method": "GET", "PathPlain": "/plugins", "Query": {}})) == 0
	count(_none(_req("/plugins/p/disable", {}))) == 0
	count(_none({"Method": "DELETE", "PathPlain": "/plugins/p", "Query": {}})) == 0
}

test_exempt if {
	count(data.dsfw.library.plugins.deny) == 0 with input as object.union(_req("/plugins/create", {"name": ["x"]}), {"Peer": {"User": "a", "Uid": 1, "Group": "adm", "Gid": 4}})
		with data.library as {"plugins": {"exempt": {"groups": ["adm"]}}}
}

test_config_problems if {
	"dsfw library: data.library.plugins.allowed must be a list; fix data.yaml" in data.dsfw.library.plugins.deny with input as _req("/plugins/pull", {}) with data.library as {"plugins": {"allowed": "vieux/sshfs"}}
}
