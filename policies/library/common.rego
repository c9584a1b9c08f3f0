# Helpers shared by the dsfw policy library (policies/library/).
#
# Not a policy: it decides nothing. Every library policy reads its settings
# with config/setting/list_setting from data.library.<policy> (a data.yaml
# at the top of the policy directory) and checks them with config_problems,
# so a typo in the data is a denial that names the key, never a silently
# wider policy. See docs/library.md.
package dsfw.library.common

import rego.v1

# The settings object of one library policy (data.library.<name>), or {}.
config(name) := c if {
	c := _library_data[name]
	is_object(c)
} else := {}

_library_data := l if {
	l := data.library
	is_object(l)
} else := {}

# One setting, or the default when it is not set.
setting(name, key, default_value) := object.get(config(name), key, default_value)

# A list setting; anything but a list counts as empty (config_problems reports it).
list_setting(name, key) := v if {
	v := setting(name, key, [])
	is_array(v)
} else := []

_type_ok(value, "list") if is_array(value)

_type_ok(value, "bool") if is_boolean(value)

_type_ok(value, "object") if is_object(value)

# Deny messages for settings of the wrong type and for unknown keys.
# schema maps each known key to "list", "bool" or "object".
config_problems(name, schema) := {msg |
	some key, value in config(name)
	not schema[key]
	msg := sprintf("dsfw library: unknown setting data.library.%s.%s (known: %s); fix data.yaml", [name, key, concat(", ", sort(object.keys(schema)))])
} | {msg |
	some key, want in schema
	value := config(name)[key]
	not _type_ok(value, want)
	msg := sprintf("dsfw library: data.library.%s.%s must be a %s; fix data.yaml", [name, key, want])
} | {msg |
	not is_object(object.get(_library_data, name, {}))
	msg := sprintf("dsfw library: data.library.%s must be a mapping of settings; fix data.yaml", [name])
} | {msg |
	data.library
	not is_object(data.library)
	msg := "dsfw library: data.library must be a mapping of policy names to settings; fix data.yaml"
}

# The library's rules in data.docker.authz/docker.build are active only when
# data.library.enabled is true, i.e. when the library's data.yaml sits at the
# TOP of the policy directory. dsfw loads policy directories recursively, so
# a copy of the library in a subdirectory (such as policies/library/ below
# the shipped policies/) stays inert instead of changing that directory's
# decisions: its data lands at data.library.library, not data.library.
enabled if data.library.enabled == true

# --- callers (input.Peer, from SO_PEERCRED) ---------------------------------

# True when the caller is named by spec: {users, groups, uids, gids}.
# Group means the caller's primary group (the gid SO_PEERCRED reports).
# Without Peer (not a UNIX socket) nobody matches: the rule fails closed.
caller_in(spec) if {
	is_object(spec)
	some field, key in {"users": "User", "groups": "Group", "uids": "Uid", "gids": "Gid"}
	values := object.get(spec, field, [])
	is_array(values)
	object.get(object.get(input, "Peer", {}), key, null) in values
}

# True when the caller is exempt from library policy <name>
# (data.library.<name>.exempt).
exempt(name) if caller_in(setting(name, "exempt", {}))

# The callers a spec names, for messages: "groups ci, uids 0"; "nobody" if none.
callers_named(spec) := text if {
	names := [sprintf("%s %v", [field, v]) | some field in ["users", "groups", "uids", "gids"]; values := object.get(spec, field, []); is_array(values); some v in values]
	count(names) > 0
	text := concat(", ", names)
} else := "nobody"

# The caller, for messages: "user alice (uid 1000), group dev (gid 1000)".
caller := sprintf("user %v (uid %v), group %v (gid %v)", [p.User, p.Uid, p.Group, p.Gid]) if {
	p := input.Peer
	is_object(p)
} else := "an unidentified caller"

# --- the request ------------------------------------------------------------

host_config := hc if {
	hc := input.Body.HostConfig
	is_object(hc)
} else := {}

# POST /containers/create (and the legacy start body, which carries a HostConfig).
container_create if {
	input.Method == "POST"
	input.PathPlain == "/containers/create"
}

# POST /services/create and /services/{id}/update: a swarm service spec.
service_request if {
	input.Method == "POST"
	service_path(input.PathPlain)
}

# What `^/services/(create|[^/]+/update)$` matches.
service_path(path) if path == "/services/create"

service_path(path) if one_segment(path, "/services/", "/update")

# --- patterns without a regular expression ----------------------------------
# regorus compiles a regular expression on every call (~100 µs each, most of a
# decision): the library's fixed patterns are these string tests instead, each
# matching exactly what the pattern named beside it matches.

# `^prefix[^/]+suffix$`: prefix, then one or more characters none of which is
# "/", then suffix.
one_segment(path, prefix, suffix) if {
	middle := between(path, prefix, suffix, "/")
	middle != ""
}

# The text between prefix and suffix when path is prefix + text + suffix and the
# text holds no character `but`; like `(.+)` for but "\n" (`.` does not match a newline).
between(path, prefix, suffix, but) := middle if {
	startswith(path, prefix)
	endswith(path, suffix)
	count(path) > count(prefix) + count(suffix)
	middle := substring(path, count(prefix), (count(path) - count(prefix)) - count(suffix))
	not contains(middle, but)
}

# `^[chars]+$`: one or more characters, each one of chars.
only_of(word, chars) if {
	trim(word, chars) == ""
	word != ""
}

hex_digits := "0123456789abcdef"

# The ContainerSpec of a service's task template, or {}.
container_spec := cs if {
	service_request
	cs := input.Body.TaskTemplate.ContainerSpec
	is_object(cs)
} else := {}

# The first value of a query parameter, as Go's r.Form.Get reads it; "" if absent.
query(name) := v if {
	values := input.Query[name]
	is_array(values)
	count(values) > 0
	v := values[0]
} else := ""

# --- image references -------------------------------------------------------

# A reference as Docker reads it (distribution/reference ParseNormalizedNamed):
# {"repo": "docker.io/library/busybox", "tag": "" or "1.36", "digest": "" or "sha256:..."}.
# "busybox" → docker.io/library/busybox; "index.docker.io/x" → docker.io/x;
# the first component is a registry only if it has "." or ":" or is "localhost".
image_ref(ref) := {"repo": repo, "tag": tag, "digest": digest} if {
	at := split(ref, "@")
	count(at) <= 2
	digest := _digest_of(at)
	name_tag := _name_and_tag(_domain_and_rest(at[0]))
	repo := name_tag[0]
	tag := name_tag[1]
}

_digest_of(at) := at[1] if count(at) == 2

_digest_of(at) := "" if count(at) == 1

_domain_and_rest(name) := ["docker.io", name] if not contains(name, "/")

_domain_and_rest(name) := [domain, rest] if {
	i := indexof(name, "/")
	i >= 0
	first := substring(name, 0, i)
	_is_registry(first)
	domain := _canonical_domain(first)
	rest := substring(name, i + 1, -1)
}

_domain_and_rest(name) := ["docker.io", name] if {
	i := indexof(name, "/")
	i >= 0
	not _is_registry(substring(name, 0, i))
}

_is_registry(first) if contains(first, ".")

_is_registry(first) if contains(first, ":")

_is_registry(first) if first == "localhost"

_is_registry(first) if lower(first) != first

_canonical_domain(d) := "docker.io" if d == "index.docker.io"

_canonical_domain(d) := d if d != "index.docker.io"

# [repo, tag]: the tag is after a ":" in the part after the registry.
_name_and_tag([domain, rest]) := [_repo(domain, parts[0]), _tag_of(parts)] if {
	parts := split(rest, ":")
	count(parts) <= 2
}

_tag_of(parts) := parts[1] if count(parts) == 2

_tag_of(parts) := "" if count(parts) == 1

_repo("docker.io", path) := concat("/", ["docker.io/library", path]) if not contains(path, "/")

_repo(domain, path) := concat("/", [domain, path]) if {
	not _short_docker_io(domain, path)
}

_short_docker_io("docker.io", path) if not contains(path, "/")

# A reference dockerd may resolve as a local image ID rather than a name: a
# full "sha256:<hex>" or any all-hex word without a tag (dockerd falls back to
# an ID-prefix search when no such name exists locally, so "cafe" can run
# image cafe12...). The library cannot tell where such an image came from.
image_id(ref) if only_of(ref, hex_digits) # `^(sha256:)?[0-9a-f]+$`

image_id(ref) if {
	startswith(ref, "sha256:")
	only_of(substring(ref, 7, -1), hex_digits)
}

# Does a normalized reference match one allowlist entry?
#   "registry.example.com/team/*"  any repository below that prefix
#   "busybox" / "docker.io/library/busybox"  that repository, any tag or digest
#   "busybox:1.36"  only that tag, and no digest (a digest would override it)
#   "busybox@sha256:..."  only that digest
image_allowed_by(img, entry) if {
	endswith(entry, "/*")
	startswith(img.repo, _wildcard_prefix(trim_suffix(entry, "*")))
}

image_allowed_by(img, entry) if {
	not endswith(entry, "/*")
	want := image_ref(entry)
	img.repo == want.repo
	_tag_ok(img, want)
	_digest_ok(img, want)
}

_wildcard_prefix(prefix) := prefix if _is_registry(substring(prefix, 0, indexof(prefix, "/")))

_wildcard_prefix(prefix) := concat("", ["docker.io/", prefix]) if not _is_registry(substring(prefix, 0, indexof(prefix, "/")))

_tag_ok(_, want) if want.tag == ""

_tag_ok(img, want) if {
	want.tag != ""
	img.digest == ""
	_effective_tag(img) == want.tag
}

_effective_tag(img) := img.tag if img.tag != ""

_effective_tag(img) := "latest" if img.tag == ""

_digest_ok(_, want) if want.digest == ""

_digest_ok(img, want) if {
	want.digest != ""
	img.digest == want.digest
}
