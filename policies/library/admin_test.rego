package dsfw.library.admin_test

import rego.v1

_root := {"User": "root", "Uid": 0, "Group": "root", "Gid": 0, "Pid": 9}

_alice := {"User": "alice", "Uid": 1000, "Group": "dev", "Gid": 1000, "Pid": 9}

_in(path, peer) := {"Method": "GET", "PathPlain": path, "Path": concat("", [path, "?"]), "Query": {}, "Peer": peer}

_deny(path, peer, cfg) := d if d := data.docker.authz.deny with input as _in(path, peer) with data.library as cfg

test_health_for_everyone_metrics_for_root_by_default if {
	count(_deny("/_dsfw/health", _alice, {"enabled": true})) == 0
	count(_deny("/_dsfw/metrics", _root, {"enabled": true})) == 0
	_deny("/_dsfw/metrics", _alice, {"enabled": true}) == {"dsfw metrics is reserved to uids 0; you are user alice (uid 1000), group dev (gid 1000) (data.library.admin.metrics)"}
}

test_without_peer_metrics_are_refused if {
	d := data.docker.authz.deny with input as {"Method": "GET", "PathPlain": "/_dsfw/metrics", "Query": {}} with data.library as {"enabled": true}
	count(d) == 1
}

test_configured_callers if {
	cfg := {"enabled": true, "admin": {"metrics": {"groups": ["dev"]}, "health": {"users": ["root"]}}}
	count(_deny("/_dsfw/metrics", _alice, cfg)) == 0
	count(_deny("/_dsfw/metrics", _root, cfg)) == 1
	count(_deny("/_dsfw/health", _alice, cfg)) == 1
	count(_deny("/_dsfw/health", _root, cfg)) == 0
}

test_settings_are_checked if {
	some m in _deny("/_ping", _root, {"enabled": true, "admin": {"metric": {}}})
	startswith(m, "dsfw library: unknown setting data.library.admin.metric")
}

test_both_bases_allow_the_endpoints if {
	data.docker.authz.allow with input as _in("/_dsfw/health", _alice) with data.library as {"enabled": true}
	data.docker.authz.readonly_request with input as _in("/_dsfw/metrics", _root) with data.library as {"enabled": true, "readonly": {"sections": ["ping"]}}
}

test_other_requests_untouched if {
	count(data.dsfw.library.admin.deny) == 0 with input as _in("/containers/json", _alice) with data.library as {"enabled": true}
}
