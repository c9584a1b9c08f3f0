package dsfw.library.labelscope_test

import rego.v1

_lib := {"enabled": true, "labelscope": {"labels": ["traefik.enable=true", "com.example.dashboard"]}}

# A caller the ownership policy (loaded with the whole library here) does not exempt.
_peer := {"Uid": 4242, "Gid": 4242, "User": "proxy", "Group": "proxy"}

_req(method, route) := {"Method": method, "PathPlain": route, "Route": route, "Query": {}, "Peer": _peer}

_item(labels) := {"Kind": "container", "ID": "c1", "Name": "web", "Labels": labels, "Owner": null}

_visible(item) if data.docker.authz.visible with input as object.union(_req("GET", "/containers/json"), {"Item": item}) with data.library as _lib

test_reads_allowed if {
	every route in ["/_ping", "/version", "/events", "/containers/json", "/containers/{id}/json"] {
		data.docker.authz.allow with input as _req("GET", route) with data.library as _lib
	}
}

test_everything_else_refused if {
	some msg in data.docker.authz.deny with input as _req("POST", "/containers/{id}/stop") with data.library as _lib
	startswith(msg, "label-scoped read-only profile: POST /containers/{id}/stop is not allowed")
	some msg2 in data.docker.authz.deny with input as _req("GET", "/images/json") with data.library as _lib
	startswith(msg2, "label-scoped read-only profile")
}

test_only_labelled_containers_visible if {
	_visible(_item({"traefik.enable": "true"}))
	_visible(_item({"com.example.dashboard": ""}))
	not _visible(_item({"traefik.enable": "false"}))
	not _visible(_item({}))
	not _visible({"Kind": "volume", "ID": "v", "Labels": {"traefik.enable": "true"}, "Owner": null})
}

test_env_removed if {
	data.docker.authz.remove == {"Config.Env"} with input as _req("GET", "/containers/{id}/json") with data.library as _lib
	data.docker.authz.remove == {"Config.Env", "Config.Cmd"} with input as _req("GET", "/containers/{id}/json")
		with data.library as {"enabled": true, "labelscope": {"labels": ["a"], "remove": ["Config.Env", "Config.Cmd"]}}
}

test_off_without_labels if {
	count(data.docker.authz.remove) == 0 with input as _req("GET", "/containers/{id}/json") with data.library as {"enabled": true}
}

test_config_problems if {
	some msg in data.docker.authz.deny with input as _req("GET", "/_ping") with data.library as {"enabled": true, "labelscope": {"label": ["a"]}}
	startswith(msg, "dsfw library: unknown setting data.library.labelscope.label")
}
