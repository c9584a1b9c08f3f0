# No host bind mounts outside an allowlist of host paths.
#
# Uses the derived input.BindMounts: every host path the request would mount
# (-v /x:/y, --mount type=bind, host paths in local volumes' options, swarm
# service mounts, legacy start bodies; at start, restart and archive
# requests, what the stored container really mounts, looked up again),
# cleaned and with symlinks resolved on the dsfw host. So write
# allowed_host_paths as resolved paths (/run, not /var/run when /var/run is
# a link to /run).
#
# A source that is or passes through a symbolic link (input.SymlinkMounts)
# is refused: the link can be re-pointed between this check and the mount.
# An allowed host path must not be writable by callers at all (a caller who
# can write there can swap a directory for a link after any check).
#
# Local volumes with options (docker volume create --opt, --mount
# volume-opt=...; input.LocalVolumes) mount what their options say: a bind
# of their device (judged as a host path above; a relative device is
# resolved against dockerd's working directory and refused), or a
# filesystem of their type (proc, sysfs, a block device's ext4, an overlay of
# host directories...): only allowed_volume_types may be mounted.
#
# A volume of any driver but local (a plugin an admin installed, such as a
# host-path plugin of the local-persist kind) mounts whatever that driver
# makes of its options, which dsfw cannot read: every driver a request would
# mount or create through (input.VolumeDrivers: --volume-driver,
# --mount volume-driver=, docker volume create -d; at start, what the stored
# container mounts) and the driver of every existing named volume a create
# mounts (input.Volumes) must be local or allowed_volume_drivers.
#
# --volumes-from gives a container another container's mounts, which the
# create request does not show: refused unless allow_volumes_from (the
# inherited mounts are then judged when the container starts).
#
# dockerd restarts a container with a restart policy (and swarm re-creates a
# service's tasks) without asking dsfw, resolving its bind sources again each
# time: host paths and restart policies do not go together unless
# allow_restart_with_host_paths.
#
# data.library.mounts:
#   allowed_host_paths: [/srv/shared, /tmp/builds]   # each allows itself and everything below
#   allowed_volume_types: [tmpfs]   # filesystem types of local volumes (default: tmpfs)
#   allowed_volume_drivers: []      # volume plugins besides local, read like image names
#   allow_volumes_from: false
#   allow_restart_with_host_paths: false
#   exempt: {users: [], groups: [], uids: [], gids: []}
package dsfw.library.mounts

import rego.v1

import data.dsfw.library.common

_name := "mounts"

_schema := {"allowed_host_paths": "list", "allowed_volume_types": "list", "allowed_volume_drivers": "list", "allow_volumes_from": "bool", "allow_restart_with_host_paths": "bool", "exempt": "object"}

deny contains msg if some msg in data.dsfw.library.common.config_problems(_name, _schema)

_allowed := [_strip(p) | some p in data.dsfw.library.common.list_setting(_name, "allowed_host_paths"); is_string(p); startswith(p, "/")]

# "/srv/x/" and "/srv/x" mean the same directory; "/" stays "/".
_strip(p) := p if p == "/"

_strip(p) := trim_right(p, "/") if p != "/"

_under(_, allowed) if allowed == "/"

_under(path, allowed) if path == allowed

_under(path, allowed) if startswith(path, concat("", [allowed, "/"]))

_allowed_text := concat(", ", _allowed) if count(_allowed) > 0

_allowed_text := "none (use a named volume)" if count(_allowed) == 0

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some path in input.BindMounts
	not _permitted(path)
	msg := sprintf("host path %s cannot be mounted into a container: use a named volume or a path under an allowed host path (allowed: %s)", [path, _allowed_text])
}

_permitted(path) if {
	some allowed in _allowed
	_under(path, allowed)
}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some link in object.get(input, "SymlinkMounts", [])
	msg := sprintf("host path %s is a symbolic link or passes through one (to %s): name the real path; a link can be re-pointed after dsfw's check", [link.Path, link.Resolved])
}

_volume_types := [t | some t in _volume_types_setting; is_string(t)]

_volume_types_setting := v if {
	v := data.dsfw.library.common.setting(_name, "allowed_volume_types", ["tmpfs"])
	is_array(v)
} else := []

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some v in object.get(input, "LocalVolumes", [])
	not v.Bind
	not v.Type in _volume_types
	msg := sprintf("local volume%s of type \"%s\" is not allowed: it would mount \"%s\" from the host (allowed types: %s)", [_volume_name(v), v.Type, v.Device, concat(", ", _volume_types)])
}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some v in object.get(input, "LocalVolumes", [])
	some path in v.Paths
	not startswith(path, "/")
	msg := sprintf("local volume%s names the relative host path \"%s\", which dockerd resolves against its own working directory: use an absolute path", [_volume_name(v), path])
}

_volume_name(v) := sprintf(" %s", [v.Name]) if v.Name != ""

_volume_name(v) := "" if v.Name == ""

_volume_drivers contains d if some d in object.get(input, "VolumeDrivers", [])

_volume_drivers contains v.Driver if {
	some v in object.get(input, "Volumes", {})
	is_object(v)
}

# Plugin names are references (vieux/sshfs = docker.io/vieux/sshfs:latest);
# a legacy plugin's name is its socket's, compared as written.
_driver_allowed(d) if d == "local"

_driver_allowed(d) if d in data.dsfw.library.common.list_setting(_name, "allowed_volume_drivers")

_driver_allowed(d) if {
	some entry in data.dsfw.library.common.list_setting(_name, "allowed_volume_drivers")
	is_string(entry)
	data.dsfw.library.common.image_allowed_by(data.dsfw.library.common.image_ref(d), entry)
}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some d in _volume_drivers
	is_string(d)
	d != ""
	not _driver_allowed(d)
	msg := sprintf("volume driver %s is not allowed: a plugin's volume mounts whatever the plugin makes of its options, host paths included, which dsfw cannot judge; use the local driver (or set data.library.mounts.allowed_volume_drivers)", [d])
}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some source in object.get(common.host_config, "VolumesFrom", [])
	not data.dsfw.library.common.setting(_name, "allow_volumes_from", false) == true
	msg := sprintf("--volumes-from %s is not allowed: it mounts whatever that container mounts (or set data.library.mounts.allow_volumes_from)", [source])
}

# The restart policy a request sets: containers (create, update) and services.
_restart := name if {
	common.container_create
	name := object.get(common.host_config, ["RestartPolicy", "Name"], "")
}

_restart := name if {
	input.Method == "POST"
	data.dsfw.library.common.one_segment(input.PathPlain, "/containers/", "/update")
	is_object(input.Body)
	name := object.get(input.Body, ["RestartPolicy", "Name"], "")
}

# swarm's default condition is "any"
_restart := name if {
	common.service_request
	name := object.get(input.Body, ["TaskTemplate", "RestartPolicy", "Condition"], "any")
}

# Host paths of the request, or, for an update, those the container mounts.
_host_paths contains path if some path in input.BindMounts

_host_paths contains mount.Source if {
	data.dsfw.library.common.one_segment(input.PathPlain, "/containers/", "/update")
	some mount in input.Target.Mounts
	mount.Type == "bind"
}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	not _restart in {"", "no", "none"}
	count(_host_paths) > 0
	not data.dsfw.library.common.setting(_name, "allow_restart_with_host_paths", false) == true
	msg := sprintf("restart policy %s is not allowed with host paths (%s): dockerd would mount them again on its own, without dsfw's check; drop --restart or the host paths", [_restart, concat(", ", sort(_host_paths))])
}

# Checkpoints (dockerd's experimental mode): a checkpoint directory is a host
# path dockerd writes CRIU images into (POST /containers/{id}/checkpoints,
# CheckpointDir), restores a process from (start ?checkpoint-dir=), lists
# (GET ?dir=) or deletes below (DELETE ?dir=). dsfw cannot judge such a
# directory like a mount, so naming one is refused; dockerd's default
# directory (inside the container's own state) is left alone.
_checkpoint_dirs contains d if {
	input.Route in {"/containers/{id}/start", "/containers/{id}/checkpoints", "/containers/{id}/checkpoints/{checkpoint}"}
	some key in ["checkpoint-dir", "dir"]
	some d in object.get(input.Query, key, [])
	d != ""
}

_checkpoint_dirs contains d if {
	input.Method == "POST"
	input.Route == "/containers/{id}/checkpoints"
	is_object(input.Body)
	some key, d in input.Body
	replace(lower(key), "\u212a", "k") == "checkpointdir" # Go matches keys case-insensitively
	d != ""
}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	count(_checkpoint_dirs) > 0
	msg := sprintf("checkpoint directories are host paths that cannot be judged (%s): drop --checkpoint-dir and use dockerd's default", [concat(", ", sort([sprintf("%v", [d]) | some d in _checkpoint_dirs]))])
}
