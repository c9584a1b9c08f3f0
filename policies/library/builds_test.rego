package dsfw.library.builds_test

import rego.v1

_run(command, raw, onbuild) := {"Command": command, "Raw": raw, "Line": 3, "OnBuild": onbuild, "Argv": [], "Json": false}

_build(runs) := {"Method": "POST", "PathPlain": "/build", "Query": {}, "RunCommands": runs}

_deny(runs, cfg) := d if d := data.dsfw.library.builds.build_deny with input as _build(runs) with data.library as {"builds": cfg}

_pipe := {"denied_run_patterns": [`\bcurl\b[^|]*\|\s*(ba)?sh\b`, `^/bin/sh -c wget `]}

test_no_patterns_no_denial if {
	count(_deny([_run("/bin/sh -c curl x | sh", "/bin/sh -c curl x | sh", false)], {})) == 0
}

test_pattern_on_the_substituted_command if {
	# RUN curl $URL | $SH with URL and SH known: only the substituted command shows "| sh"
	_deny([_run("/bin/sh -c curl http://x | sh", "/bin/sh -c curl $URL | $SH", false)], _pipe) == {`RUN at Dockerfile line 3 matches the denied pattern \bcurl\b[^|]*\|\s*(ba)?sh\b: /bin/sh -c curl $URL | $SH`}
}

test_pattern_on_the_raw_command if {
	# ${X:-wget} with X known and empty substitutes to wget; a raw-only match counts as well
	count(_deny([_run("/bin/sh -c echo", "/bin/sh -c wget x", false)], _pipe)) == 1
}

test_onbuild_triggers if {
	_deny([_run("/bin/sh -c wget x", "/bin/sh -c wget x", true)], _pipe) == {"ONBUILD RUN at Dockerfile line 3 matches the denied pattern ^/bin/sh -c wget : /bin/sh -c wget x"}
}

test_other_commands_pass if {
	count(_deny([_run("/bin/sh -c curl -o f x", "/bin/sh -c curl -o f x", false), _run("echo wget", "echo wget", false)], _pipe)) == 0
}

test_no_run_commands if {
	count(data.dsfw.library.builds.build_deny) == 0 with input as {"Method": "POST", "PathPlain": "/build", "Query": {}} with data.library as {"builds": _pipe}
}

test_bad_settings if {
	count(data.dsfw.library.builds.deny) == 1 with input as _build([]) with data.library as {"builds": {"denied_run_patterns": [1]}}
	count(data.dsfw.library.builds.deny) == 1 with input as _build([]) with data.library as {"builds": {"denied_run_pattern": []}}
}

test_exempt if {
	count(data.dsfw.library.builds.build_deny) == 0 with input as object.union(_build([_run("/bin/sh -c wget x", "/bin/sh -c wget x", false)]), {"Peer": {"User": "ci", "Uid": 5, "Group": "ci", "Gid": 5}})
		with data.library as {"builds": object.union(_pipe, {"exempt": {"users": ["ci"]}})}
}

test_collected_for_data_docker_build_and_authz if {
	some msg in data.docker.build.deny with input as _build([_run("/bin/sh -c wget x", "/bin/sh -c wget x", false)])
		with data.library as {"enabled": true, "builds": _pipe}
	startswith(msg, "RUN at Dockerfile line 3 matches")
	some problem in data.docker.authz.deny with input as _build([]) with data.library as {"enabled": true, "builds": {"denied_run_patterns": "wget"}}
	contains(problem, "data.library.builds.denied_run_patterns must be a list")
}
