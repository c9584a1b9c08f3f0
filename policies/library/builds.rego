# Build commands: RUN steps whose command matches a denied pattern.
#
# Matched against input.RunCommands (docs/builds.md): every RUN, and every
# RUN inside ONBUILD, with SHELL applied and the ENV/ARG values known at that
# step substituted (Command), and as written (Raw). A pattern is a regular
# expression (RE2) searched anywhere in the command; anchor it with ^...$ to
# match a whole command. Shell obfuscation (c''url, $(printf ...)) is not
# undone: these patterns are a tripwire for the commands people write, not a
# sandbox for what a build may run.
#
# data.library.builds:
#   denied_run_patterns: ["\\bcurl\\b[^|]*\\|\\s*(ba)?sh\\b"]   # e.g. curl ... | sh
#   exempt: {users: [], groups: [], uids: [], gids: []}
package dsfw.library.builds

import rego.v1

_name := "builds"

_schema := {"denied_run_patterns": "list", "exempt": "object"}

deny contains msg if some msg in data.dsfw.library.common.config_problems(_name, _schema)

_patterns := data.dsfw.library.common.list_setting(_name, "denied_run_patterns")

deny contains msg if {
	some pattern in _patterns
	not is_string(pattern)
	msg := sprintf("dsfw library: data.library.builds.denied_run_patterns must be a list of strings (regular expressions), not %v; fix data.yaml", [pattern])
}

# The command as written (Raw) in the message: Command may hold build-arg values.
build_deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some run in object.get(input, "RunCommands", [])
	some pattern in _patterns
	is_string(pattern)
	_matches(pattern, run)
	msg := sprintf("%s at Dockerfile line %d matches the denied pattern %s: %s", [_step(run), run.Line, pattern, run.Raw])
}

_matches(pattern, run) if regex.match(pattern, run.Command)

_matches(pattern, run) if regex.match(pattern, run.Raw)

_step(run) := "ONBUILD RUN" if run.OnBuild == true

_step(run) := "RUN" if run.OnBuild != true
