# Owner isolation: callers see and act only on the objects they created.
#
# Every container, volume, network, service, secret, config and built image
# a caller creates is stamped with its identity (labels dsfw.owner.uid and
# dsfw.owner.user, from input.Peer: SO_PEERCRED, so it cannot be claimed;
# a label of the same name sent by the client is overwritten). A caller then
# sees only its own objects: lists, `docker events` and every request naming
# an object (inspect, logs, exec, attach, cp, stop, rm...) behave as if the
# others did not exist (dsfw answers dockerd's own "No such container" 404).
# Exempt callers (data.library.ownership.exempt) see and act on everything.
# A name another caller's image (or a shared one) holds cannot be given to
# another image (docker tag, commit, build -t, import, pull of a tag), so nobody redirects what
# another caller's `docker run name` starts.
#
# Objects without an owner label -- images pulled or loaded, the default
# networks (bridge, host, none), plugins, nodes -- are shared when their
# kind is listed in `shared` (default: image, network, plugin, node): every
# caller sees and uses them, but only exempt callers remove or change them.
# Objects of other kinds without an owner (containers created before dsfw, or
# directly on dockerd's socket) are visible to exempt callers only.
#
# Prunes of containers, images, volumes and networks are scoped: the owner
# labels below restrict them (dsfw adds label=dsfw.owner.uid=... to the
# filters it forwards), so a caller prunes only its own objects; exempt
# callers prune everything. `docker commit` and `docker network
# connect/disconnect` name their container outside the path (query, body):
# dsfw resolves it too (input.Target for commit, input.Container for
# connect), so another caller's container is missing there as everywhere,
# and a shared network (bridge) can be joined. Refused for callers who are
# not exempt, because it acts on objects the request does not name (so dsfw
# cannot tell whose they are): the build cache prune. `docker system df`
# answers with the caller's objects only (build cache records, which have no
# owner, for exempt callers only); `docker save` writes images the caller
# sees (dsfw resolves every image it writes, input.Images).
# Mounting another caller's named volume (`-v name:/path`, `--mount
# source=name`; dsfw resolves them as input.Volumes) is refused. Joining
# another container's namespaces or volumes (`--volumes-from`, `--network
# container:x`) is refused by namespaces.rego and mounts.rego.
#
# Use it with a base (allow_all.rego). It defines data.docker.authz.labels
# and .visible, so do not combine it with labelscope.rego.
#
# data.library.ownership:
#   exempt: {groups: [docker-admins]}        # see and act on everything
#   shared: [image, network, plugin, node]   # kinds whose unowned objects all callers see
package docker.authz

import rego.v1

import data.dsfw.library.common

_ownership_schema := {"exempt": "object", "shared": "list"}

_ownership_kinds := {"container", "exec", "image", "volume", "network", "service", "task", "node", "secret", "config", "plugin"}

deny contains msg if {
	common.enabled
	some msg in data.dsfw.library.common.config_problems("ownership", _ownership_schema)
}

deny contains msg if {
	common.enabled
	some kind in data.dsfw.library.common.list_setting("ownership", "shared")
	not kind in _ownership_kinds
	msg := sprintf("dsfw library: unknown kind %v in data.library.ownership.shared (known: %s); fix data.yaml", [kind, concat(", ", sort(_ownership_kinds))])
}

_ownership_shared := data.dsfw.library.common.list_setting("ownership", "shared") if {
	"shared" in object.keys(data.dsfw.library.common.config("ownership"))
} else := ["image", "network", "plugin", "node"]

_ownership_exempt if data.dsfw.library.common.exempt("ownership")

_ownership_uid := input.Peer.Uid if is_number(input.Peer.Uid)

# --- stamping ---------------------------------------------------------------

labels := object.union({"dsfw.owner.uid": sprintf("%d", [_ownership_uid])}, _ownership_user) if {
	common.enabled
	_ownership_uid
	not _ownership_prunes_all
}

# Prunes that the labels restrict to the caller's objects (exempt callers: all).
_ownership_prunes := {"/containers/prune", "/images/prune", "/volumes/prune", "/networks/prune"}

_ownership_prunes_all if {
	_ownership_exempt
	input.Route in _ownership_prunes
}

deny contains msg if {
	common.enabled
	not _ownership_exempt
	input.Route in _ownership_prunes
	not _ownership_uid
	msg := sprintf("a prune is limited to the caller's objects by its uid, and this caller has none; you are %s (data.library.ownership.exempt)", [common.caller])
}

_ownership_user := {"dsfw.owner.user": input.Peer.User} if is_string(input.Peer.User)

else := {}

# --- seeing -----------------------------------------------------------------

visible if not common.enabled

visible if {
	common.enabled
	_ownership_exempt
}

visible if {
	common.enabled
	_ownership_owner(input.Item) == _ownership_uid
}

visible if {
	common.enabled
	_ownership_owner(input.Item) == null
	input.Item.Kind in _ownership_shared
}

_ownership_owner(item) := uid if {
	uid := item.Owner.Uid
} else := null

# --- acting -----------------------------------------------------------------

# Changing or removing a shared object: only for exempt callers.
_ownership_uses := {"/images/{name}/tag", "/images/{name}/push", "/images/{name}/get", "/networks/{id}/connect", "/networks/{id}/disconnect"}

deny contains msg if {
	common.enabled
	not _ownership_exempt
	is_object(input.Target)
	_ownership_owner(input.Target) == null
	input.Method in {"POST", "DELETE", "PUT"}
	not input.Route in _ownership_uses
	msg := sprintf("%s %s is shared: only exempt callers change or remove it; you are %s (data.library.ownership.exempt)", [input.Target.Kind, input.Target.Name, common.caller])
}

_ownership_unscoped := {
	"/build/prune": "pruning the build cache",
}

deny contains msg if {
	common.enabled
	not _ownership_exempt
	what := _ownership_unscoped[input.Route]
	msg := sprintf("%s acts on objects of other callers: only exempt callers may; you are %s (data.library.ownership.exempt)", [what, common.caller])
}

# Naming an image (docker tag, commit's repo:tag, build -t, import, pull) takes the name
# from the image that holds it (input.Destinations: name -> that image, or
# null): only when it is the caller's own, or the same image.
deny contains msg if {
	common.enabled
	not _ownership_exempt
	some ref, held in input.Destinations
	is_object(held)
	not _ownership_owner(held) == _ownership_uid
	not held.ID == input.Target.ID
	msg := sprintf("image name %s is held by an image you cannot change; choose another name; you are %s (data.library.ownership.exempt)", [ref, common.caller])
}

# Named volumes of a create (input.Volumes: name -> identity, or null when it
# does not exist yet and dockerd will create it for this caller).
deny contains msg if {
	common.enabled
	not _ownership_exempt
	some name, volume in input.Volumes
	is_object(volume)
	not _ownership_usable(volume)
	msg := sprintf("volume %s cannot be mounted: it is another caller's; you are %s (data.library.ownership.exempt)", [name, common.caller])
}

_ownership_usable(item) if _ownership_owner(item) == _ownership_uid

_ownership_usable(item) if {
	_ownership_owner(item) == null
	item.Kind in _ownership_shared
}
