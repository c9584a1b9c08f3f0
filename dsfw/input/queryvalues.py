"""Query-parameter values in the one spelling dockerd acts on.

:mod:`dsfw.input.values` does this for JSON bodies; a few values dockerd
reads from the query are normalized too.  Container names: dockerd strips one
leading ``/`` (``reserveName`` stores every name as ``/x``) and refuses what is
left if it still starts with one, so ``name=/x`` is ``name=x``.  A build's
``networkmode=container:/x`` names container ``x`` by name but no container
by ID prefix, so it has no single spelling and is refused.  The policy sees,
and dockerd receives, the rewritten query.  docs/input.md lists each rewrite.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

from dsfw.errors import BadRequest
from dsfw.input.path import CanonicalTarget


def canonical_container_name(name: str, where: str) -> str:
    """``/x`` -> ``x``, as dockerd reserves it; ``//x`` refused as dockerd would."""
    if name.startswith("/"):
        name = name[1:]
        if name.startswith("/"):
            raise BadRequest(f"{where}: invalid container name {'/' + name!r}; "
                             "dockerd would refuse it")
    return name


def _build_network_mode(mode: str, where: str) -> str:
    if mode.startswith("container:/"):
        raise BadRequest(f"{where}: write {'container:' + mode[len('container:/'):]!r} instead "
                         f"of {mode!r}: dockerd finds containers by ID only without the '/'")
    return mode


# distribution/reference's grammar (vendored by moby 20.10).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*\Z")
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?\Z")
_TAG = re.compile(r"[\w][\w.-]{0,127}\Z", re.ASCII)
# go-digest's Parse: a known algorithm and its length of lower-case hex.
_DIGEST = re.compile(r"(?:sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128})\Z")
_HEX64 = re.compile(r"[a-f0-9]{64}\Z")
_MAX_NAME = 255


def image_reference(image: str, tag: str = "") -> str:
    """The reference ``POST /images/create?fromImage=&tag=`` pulls, fully qualified.

    ``PullImage`` trims one trailing ``:``, reads ``fromImage`` with
    ``ParseNormalizedNamed`` (``busybox`` is ``docker.io/library/busybox``,
    ``index.docker.io`` is ``docker.io``), then applies ``tag``: a digest
    replaces any digest, anything else replaces the tag (so
    ``fromImage=busybox:1.36&tag=latest`` pulls ``latest``).  No tag and no
    digest pulls every tag: the reference is then the bare repository.
    Raises :class:`BadRequest` where dockerd would refuse the reference.
    """
    bad = BadRequest("invalid image reference; dockerd would refuse it")
    image = image[:-1] if image.endswith(":") else image
    name, _, digest = image.partition("@")
    if digest and not _DIGEST.match(digest):
        raise bad
    own_tag = ""
    colon, slash = name.rfind(":"), name.rfind("/")
    if colon > slash:
        name, own_tag = name[:colon], name[colon + 1:]
        if not _TAG.match(own_tag):
            raise bad
    if _HEX64.match(name):
        raise bad
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost"
                   and first.lower() == first):
        domain, path = "docker.io", name
    else:
        domain, path = first, rest
    if domain == "index.docker.io":
        domain = "docker.io"
    if domain == "docker.io" and "/" not in path:
        path = "library/" + path
    if not _DOMAIN.match(domain) or not _PATH.match(path) or len(f"{domain}/{path}") > _MAX_NAME:
        raise bad
    if tag:
        if _DIGEST.match(tag):
            digest, own_tag = tag, ""  # WithDigest(TrimNamed(ref), tag)
        elif _TAG.match(tag):
            own_tag = tag
        else:
            raise bad
    ref = f"{domain}/{path}"
    if own_tag:
        ref += ":" + own_tag
    if digest:
        ref += "@" + digest
    return ref


def query_facts(method: str, template: str, target: CanonicalTarget) -> dict[str, Any]:
    """``ImageRef``: the reference a pull (``POST /images/create?fromImage=``) fetches.

    Absent where dockerd would refuse the reference (it answers the client);
    never the text itself in an error, which may carry a registry token.
    """
    if method == "POST" and template == "/images/create":
        image = target.param("fromImage")
        if image:
            try:
                return {"ImageRef": image_reference(image, target.param("tag") or "")}
            except BadRequest:
                return {}
    return {}


# (method, route template) -> {parameter: rewrite}
_REWRITES = {
    ("POST", "/containers/create"): {"name": canonical_container_name},
    ("POST", "/containers/{id}/rename"): {"name": canonical_container_name},
    ("POST", "/build"): {"networkmode": _build_network_mode},
}


def canonical_query_values(method: str, template: str, target: CanonicalTarget) -> CanonicalTarget:
    """``target`` with the values of its query parameters in dockerd's one spelling."""
    rewrites = _REWRITES.get((method, template))
    if not rewrites or not target.query:
        return target
    query = tuple((k, rewrites[k](v, f"query parameter {k}") if k in rewrites else v)
                  for k, v in target.query)
    if query == target.query:
        return target
    return dataclasses.replace(target, query=query)
