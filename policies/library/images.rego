# Image sources: only images from allowed registries/repositories.
#
# Checked: the image of POST /containers/create (and of swarm services),
# pulls (POST /images/create fromImage + tag), tags (POST /images/{name}/tag:
# both names), commits (POST /commit repo), and for builds every image the
# Dockerfile pulls (input.ExternalImages: FROM, COPY --from, RUN --mount
# from, # syntax=). Imports (fromSrc) and `docker load` bring images from no
# registry at all and are refused unless allowed.
#
# data.library.images:
#   allowed: ["docker.io/library/busybox", "busybox:1.36", "registry.example.com/team/*"]
#   allow_import: false   # POST /images/create?fromSrc=... (docker import)
#   allow_load: false     # POST /images/load (docker load)
#   exempt: {users: [], groups: [], uids: [], gids: []}
package dsfw.library.images

import rego.v1

import data.dsfw.library.common

_name := "images"

_schema := {"allowed": "list", "allow_import": "bool", "allow_load": "bool", "exempt": "object"}


deny contains msg if some msg in data.dsfw.library.common.config_problems(_name, _schema)

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some [ref, where] in _checked
	msg := _refusal(ref, where)
}

build_deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some ref in object.get(input, "ExternalImages", [])
	msg := _refusal(ref, "Dockerfile")
}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	input.Method == "POST"
	input.PathPlain == "/images/create"
	data.dsfw.library.common.query("fromSrc") != ""
	not data.dsfw.library.common.setting(_name, "allow_import", false) == true
	msg := "docker import is not allowed: it makes an image that comes from no registry; pull an image from an allowed registry instead (or set data.library.images.allow_import)"
}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	input.Method == "POST"
	input.PathPlain == "/images/load"
	not data.dsfw.library.common.setting(_name, "allow_load", false) == true
	msg := "docker load is not allowed: it brings in images from no registry; pull an image from an allowed registry instead (or set data.library.images.allow_load)"
}

# References this request names, each with where it came from (for the message).
_checked contains [ref, "container image"] if {
	common.container_create
	ref := input.Body.Image
}

_checked contains [ref, "service image"] if {
	input.Method == "POST"
	data.dsfw.library.common.service_path(input.PathPlain)
	ref := input.Body.TaskTemplate.ContainerSpec.Image
}

_checked contains [ref, "pulled image"] if {
	input.Method == "POST"
	input.PathPlain == "/images/create"
	data.dsfw.library.common.query("fromSrc") == ""
	ref := _with_tag(data.dsfw.library.common.query("fromImage"), data.dsfw.library.common.query("tag"))
}

_checked contains [ref, "image being tagged"] if {
	some ref in _tag_request
}

_checked contains [ref, "new tag"] if {
	input.Method == "POST"
	data.dsfw.library.common.between(input.PathPlain, "/images/", "/tag", "\n") # `^/images/.+/tag$`
	ref := _with_tag(data.dsfw.library.common.query("repo"), data.dsfw.library.common.query("tag"))
}

_checked contains [ref, "name of the committed image"] if {
	input.Method == "POST"
	input.PathPlain == "/commit"
	data.dsfw.library.common.query("repo") != ""
	ref := _with_tag(data.dsfw.library.common.query("repo"), data.dsfw.library.common.query("tag"))
}

_tag_request contains ref if {
	input.Method == "POST"
	ref := data.dsfw.library.common.between(input.PathPlain, "/images/", "/tag", "\n") # `^/images/(.+)/tag$`
}

# fromImage + tag as dockerd combines them: a tag that is a digest pins it.
_with_tag(image, "") := image

_with_tag(image, tag) := concat("@", [image, tag]) if {
	tag != ""
	contains(tag, ":")
}

_with_tag(image, tag) := concat(":", [image, tag]) if {
	tag != ""
	not contains(tag, ":")
}

_allowed := [entry | some entry in data.dsfw.library.common.list_setting(_name, "allowed"); is_string(entry)]

_refusal(ref, where) := msg if {
	not is_string(ref)
	msg := sprintf("%s is not an image name; name an image from an allowed registry", [where])
}

_refusal(ref, where) := msg if {
	is_string(ref)
	data.dsfw.library.common.image_id(ref)
	msg := sprintf("image \"%s\" (%s) looks like an image ID, which cannot be traced to a registry; use an image name from: %s", [ref, where, _allowed_text])
}

_refusal(ref, where) := msg if {
	is_string(ref)
	not data.dsfw.library.common.image_id(ref)
	not data.dsfw.library.common.image_ref(ref)
	msg := sprintf("\"%s\" (%s) is not a valid image reference", [ref, where])
}

_refusal(ref, where) := msg if {
	is_string(ref)
	not data.dsfw.library.common.image_id(ref)
	img := data.dsfw.library.common.image_ref(ref)
	not _allowed_image(img)
	msg := sprintf("image \"%s\" (%s, read as %s) is not from an allowed registry or repository; use one of: %s", [ref, where, _describe(img), _allowed_text])
}

_allowed_image(img) if {
	some entry in _allowed
	data.dsfw.library.common.image_allowed_by(img, entry)
}

_describe(img) := concat("", [img.repo, _suffix(":", img.tag), _suffix("@", img.digest)])

_suffix(_, "") := ""

_suffix(sep, s) := concat("", [sep, s]) if s != ""

_allowed_text := concat(", ", _allowed) if count(_allowed) > 0

_allowed_text := "(none: set data.library.images.allowed)" if count(_allowed) == 0
