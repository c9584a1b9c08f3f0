package dsfw.library.callers_test

import rego.v1

_alice := {"User": "alice", "Uid": 1000, "Group": "dev", "Gid": 1000, "Pid": 9}

_ci := {"User": "jenkins", "Uid": 990, "Group": "ci", "Gid": 990, "Pid": 9}

_cfg := {"callers": {"build": {"groups": ["ci"]}, "exec": {}}}

_deny(method, path, peer) := d if d := data.dsfw.library.callers.deny with input as {"Method": method, "PathPlain": path, "Query": {}, "Peer": peer} with data.library as _cfg

test_build_only_for_group if {
	count(_deny("POST", "/build", _ci)) == 0
	_deny("POST", "/build", _alice) == {"docker build is reserved to groups ci; you are user alice (uid 1000), group dev (gid 1000) (data.library.callers.build)"}
}

test_without_peer_nobody_matches if {
	d := data.dsfw.library.callers.deny with input as {"Method": "POST", "PathPlain": "/build", "Query": {}} with data.library as _cfg
	d == {"docker build is reserved to groups ci; you are an unidentified caller (data.library.callers.build)"}
}

test_empty_spec_is_nobody if {
	_deny("POST", "/containers/c1/exec", _ci) == {"docker exec is reserved to nobody; you are user jenkins (uid 990), group ci (gid 990) (data.library.callers.exec)"}
}

test_unlisted_actions_unrestricted if {
	count(_deny("POST", "/containers/create", _alice)) == 0
	count(_deny("GET", "/containers/json", _alice)) == 0
}

test_all_actions_match_their_endpoints if {
	cfg := {"callers": {"pull": {}, "create": {}, "network": {}, "volume": {}, "delete": {}}}
	some m1 in data.dsfw.library.callers.deny with input as {"Method": "POST", "PathPlain": "/images/create", "Query": {}} with data.library as cfg
	startswith(m1, "docker pull is reserved")
	some m2 in data.dsfw.library.callers.deny with input as {"Method": "POST", "PathPlain": "/networks/n1/connect", "Query": {}} with data.library as cfg
	startswith(m2, "changing networks is reserved")
	count(data.dsfw.library.callers.deny) == 2 with input as {"Method": "DELETE", "PathPlain": "/volumes/v1", "Query": {}} with data.library as cfg
}

test_config_problems if {
	"dsfw library: data.library.callers.build must be a object; fix data.yaml" in data.dsfw.library.callers.deny with input as {"Method": "GET", "PathPlain": "/_ping", "Query": {}} with data.library as {"callers": {"build": ["ci"]}}
}
