# Containers are judged again when someone starts them or runs a process in
# them: the privileges and host namespaces they were created with, as dockerd
# stored them (input.Target.HostConfig).
#
# A container can exist without the library having allowed it: made directly
# on dockerd's socket, by a caller exempt from a policy, or before a rule was
# added. Starting it, or `docker exec`/`attach` into it, gives the caller
# those privileges -- a privileged container's shell is the host's root.
# Copying files into it (docker cp) lets it run the caller's code with them,
# and a restart policy (docker update --restart) lets dockerd start it later.
# So for POST /containers/{id}/start, /restart, /exec, /attach,
# GET /containers/{id}/attach/ws, POST /exec/{id}/start,
# PUT /containers/{id}/archive and an update that sets a restart policy, the
# privileged and namespaces policies decide the stored HostConfig as if it
# were a create by this caller (their exempt settings apply). An exec instance is made by
# one request and started by another, by anyone who knows its ID (listed in
# the container's ExecIDs): at POST /exec/{id}/start its stored process
# (privileged, user) is judged by the privileged and users policies as if this
# caller created it, and its container as above. Host paths are judged again by mounts.rego through
# the mount facts dsfw looks up for start and restart.
#
# No settings of its own.
package dsfw.library.stored

import rego.v1

# route template → what the caller does to the container
_acts := {
	"/containers/{id}/start": "start it",
	"/containers/{id}/restart": "restart it",
	"/containers/{id}/exec": "run processes in it",
	"/containers/{id}/attach": "attach to it",
	"/containers/{id}/attach/ws": "attach to it",
	"/exec/{id}/start": "start a process in it",
}

_container := t if {
	t := input.Target
	is_object(t)
	t.Kind == "container"
	is_object(t.HostConfig)
}

# POST /exec/{id}/start: input.Target is the exec instance, with its container.
_container := t if {
	input.Target.Kind == "exec"
	t := input.Target.Container
	is_object(t)
	t.Kind == "container"
	is_object(t.HostConfig)
}

# dockerd reports unset lists as null; a create body as dsfw shows it has no
# nulls. It also stores its own default CgroupnsMode ("host" on cgroup v1),
# which cannot be told from --cgroupns host: that one is judged at create only.
# Its LogConfig is the daemon's default driver and options merged in when the
# create left them out (an admin's syslog-address, say): judged at create only.
_host_config := {k: v | some k, v in _container.HostConfig; v != null; not k in {"CgroupnsMode", "LogConfig"}}

_act := _acts[input.Route]

# Writing into its filesystem (docker cp, PUT /containers/{id}/archive) puts
# the caller's code where the container will run it with its privileges: an
# agent's binary, a script it runs, a file its next start executes.
_act := "copy files into it" if {
	input.Method == "PUT"
	input.Route == "/containers/{id}/archive"
}

# A restart policy makes dockerd start the container on its own: when it
# exits, and at the next daemon start even if it never ran.
_act := "have dockerd restart it on its own" if {
	input.Method == "POST"
	input.Route == "/containers/{id}/update"
	is_object(input.Body)
	not object.get(input.Body, ["RestartPolicy", "Name"], "") in {"", "no"}
}

# dsfw's capability spelling (input.CapAdd), for the stored names as sent.
_cap(c) := u if {
	u := upper(c)
	_canonical(u)
}

_cap(c) := concat("", ["CAP_", upper(c)]) if not _canonical(upper(c))

_canonical(u) if u == "ALL"

_canonical(u) if startswith(u, "CAP_")

_stored_caps := c if {
	c := _host_config.CapAdd
	is_array(c)
} else := []

_peer := {"Peer": input.Peer} if input.Peer

_peer := {} if not input.Peer

_as_create := object.union(_peer, {
	"Method": "POST",
	"PathPlain": "/containers/create",
	"Route": "/containers/create",
	"Query": {},
	"Body": {"Image": object.get(_container, "Image", ""), "HostConfig": _host_config},
	"BindMounts": [],
	"CapAdd": [_cap(c) | some c in _stored_caps; is_string(c)],
	"CapDrop": [],
	"Privileged": object.get(_host_config, "Privileged", false) == true,
})

_stored_denials contains msg if {
	_act
	some msg in data.dsfw.library.privileged.deny with input as _as_create
}

_stored_denials contains msg if {
	_act
	some msg in data.dsfw.library.namespaces.deny with input as _as_create
}

# What dockerd stored could not be given one spelling (dsfw.input.values):
# judging it as it stands could be dodged, so the container is refused.
deny contains msg if {
	_act
	is_string(_container.HostConfigError)
	msg := sprintf("container %s was created with settings dsfw cannot read in one spelling, so you may not %s: %s", [_container.Name, _act, _container.HostConfigError])
}

deny contains msg if {
	some reason in _stored_denials
	not startswith(reason, "dsfw library:") # settings problems are reported once, by their policy
	msg := sprintf("container %s was created with settings you may not use, so you may not %s: %s", [_container.Name, _act, reason])
}

# The exec instance's own process, as dockerd stored it at its create.
_exec_process := p if {
	input.Route == "/exec/{id}/start"
	input.Target.Kind == "exec"
	p := object.get(input.Target, "ProcessConfig", {})
	is_object(p)
}

_exec_privileged := object.get(_exec_process, "privileged", false) == true

_exec_user := u if {
	u := object.get(_exec_process, "user", "")
	is_string(u)
} else := ""

_exec_name := n if {
	n := _container.Name
	is_string(n)
} else := "?"

_as_exec_create := object.union(_peer, {
	"Method": "POST",
	"PathPlain": concat("", ["/containers/", _exec_name, "/exec"]),
	"Route": "/containers/{id}/exec",
	"Query": {},
	"Body": {"User": _exec_user, "Privileged": _exec_privileged},
	"BindMounts": [],
	"CapAdd": [],
	"CapDrop": [],
	"Privileged": _exec_privileged,
})

_exec_denials contains msg if {
	_exec_process
	some msg in data.dsfw.library.privileged.deny with input as _as_exec_create
}

_exec_denials contains msg if {
	_exec_process
	some msg in data.dsfw.library.users.deny with input as _as_exec_create
}

deny contains msg if {
	some reason in _exec_denials
	not startswith(reason, "dsfw library:")
	msg := sprintf("exec instance %s was created with settings you may not use, so you may not start it: %s", [input.Target.ID, reason])
}
