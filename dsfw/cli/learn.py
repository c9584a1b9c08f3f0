"""``dsfw learn``: a least-privilege policy from recorded traffic.

Run dsfw with ``--dry-run --record-dir DIR``, use the tools as usual, then
``dsfw learn DIR --output POLICY_DIR`` writes a policy that allows what was
recorded and nothing else:

* **routes per caller**: ``learned.rego`` allows a request only when its
  caller (``input.Peer``: TLS subject CN, else uid) was seen sending that
  method to that route *template* (``/containers/{id}/logs``, not one rule per
  container); anything else gets a deny message naming the caller and route;
* **values through the policy library**: images, capabilities, devices,
  security options, host paths, host namespaces, network drivers and names
  are narrowed to those recorded, as settings of the library's own policies
  (copied next to the generated ``data.yaml``), so the review reads like any
  library configuration;
* **tests**: ``learned_test.rego`` holds one test per distinct recorded
  request (``dsfw test`` passes), and learn itself decides every recording
  with the generated policy before it reports success.

Recordings are redacted when written; learn redacts each input again before
one goes into a generated test, and writes no other recorded value than the
narrowed settings above.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, TextIO

import yaml

from dsfw import routes
from dsfw.input.redact import redacted_input
from dsfw.ops.recorder import input_of
from dsfw.policy import AUTHZ, BUILD

#: Library files that are not copied: the bases (learned.rego is the base) and
#: callers.rego (learned routes per caller are narrower).
_NOT_COPIED = ("allow_all.rego", "readonly.rego", "callers.rego")
_HOST_NAMESPACES = {"PidMode": "pid", "IpcMode": "ipc", "NetworkMode": "network", "UTSMode": "uts",
                    "UsernsMode": "userns", "CgroupnsMode": "cgroupns"}


class LearnError(ValueError):
    """The recordings or the output directory cannot be used (exit status 2)."""


@dataclass
class Recording:
    path: str
    package: str
    input: dict[str, Any]


@dataclass
class Learned:
    """What the recordings show, gathered before anything is written."""

    routes: dict[str, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))
    callers: dict[str, dict[str, Any]] = field(default_factory=dict)
    images: set[str] = field(default_factory=set)
    capabilities: set[str] = field(default_factory=set)
    devices: set[str] = field(default_factory=set)
    security_opts: set[str] = field(default_factory=set)
    host_paths: set[str] = field(default_factory=set)
    host_namespaces: set[str] = field(default_factory=set)
    container_joins: bool = False
    network_drivers: set[str] = field(default_factory=set)
    network_names: set[str] = field(default_factory=set)
    network_options: set[str] = field(default_factory=set)
    privileged_callers: set[str] = field(default_factory=set)
    imports: bool = False
    loads: bool = False
    skipped: list[str] = field(default_factory=list)


def caller_key(doc: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The identity learned routes are keyed by, and what the key is made of."""
    peer = doc.get("Peer")
    if not isinstance(peer, dict):
        return None
    tls = peer.get("Tls")
    if isinstance(tls, dict) and isinstance(tls.get("SubjectCN"), str):
        return f"tls:{tls['SubjectCN']}", {"tls_subject_cn": tls["SubjectCN"]}
    uid = peer.get("Uid")
    if isinstance(uid, int) and not isinstance(uid, bool):
        about = {"uid": uid}
        if isinstance(peer.get("User"), str):
            about["user"] = peer["User"]
        return f"uid:{uid}", about
    return None


def route_template(doc: dict[str, Any]) -> str | None:
    method, path = doc.get("Method"), doc.get("PathPlain")
    if not isinstance(method, str) or not isinstance(path, str):
        return None
    route = routes.match(method, path)
    return route.template if route.known else None


def read_recordings(directory: str) -> list[Recording]:
    if not os.path.isdir(directory):
        raise LearnError(f"{directory} is not a directory")
    found = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8") as f:
                document = json.load(f)
            doc = input_of(document)
        except (OSError, ValueError) as e:
            raise LearnError(f"{path}: not a recorded decision: {e}") from None
        decision = document.get("decision") if isinstance(document, dict) else None
        package = decision.get("package", AUTHZ) if isinstance(decision, dict) else AUTHZ
        if package in (AUTHZ, BUILD):
            found.append(Recording(path, package, doc))
    if not found:
        raise LearnError(f"{directory} holds no recorded decisions (run dsfw with --record-dir)")
    return found


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, list):
        return (v for v in value if isinstance(v, str))
    return ()


def _host_config(doc: dict[str, Any]) -> dict[str, Any]:
    body = doc.get("Body")
    hc = body.get("HostConfig") if isinstance(body, dict) else None
    return hc if isinstance(hc, dict) else {}


def learn(recordings: list[Recording], checked_images) -> Learned:
    """Gather routes per caller and the values that matter; ``checked_images(doc)`` lists the
    image references the library's images policy checks for an input."""
    learned = Learned()
    for rec in recordings:
        doc = rec.input
        key = caller_key(doc)
        if key is None:
            learned.skipped.append(f"{os.path.basename(rec.path)}: no caller (input.Peer)")
            continue
        caller, about = key
        learned.callers.setdefault(caller, about)
        if rec.package == BUILD:
            learned.images.update(_strings(doc.get("ExternalImages")))
            continue
        template = route_template(doc)
        if template is None:
            learned.skipped.append(f"{os.path.basename(rec.path)}: {doc.get('Method')} "
                                   f"{doc.get('PathPlain')} is no Docker endpoint dsfw knows")
            continue
        learned.routes[caller].add((doc["Method"], template))
        learned.images.update(checked_images(doc))
        learned.capabilities.update(c[4:] if c.startswith("CAP_") else c
                                    for c in _strings(doc.get("CapAdd")))
        learned.host_paths.update(_strings(doc.get("BindMounts")))
        if doc.get("Privileged") is True:
            learned.privileged_callers.add(caller)
        hc = _host_config(doc)
        for device in hc.get("Devices") or []:
            if isinstance(device, dict) and isinstance(device.get("PathOnHost"), str):
                learned.devices.add(device["PathOnHost"])
        learned.security_opts.update(o for o in _strings(hc.get("SecurityOpt"))
                                     if not o.startswith("no-new-privileges"))
        for fld, namespace in _HOST_NAMESPACES.items():
            mode = hc.get(fld)
            if mode == "host":
                learned.host_namespaces.add(namespace)
            elif isinstance(mode, str) and mode.startswith("container:"):
                learned.container_joins = True
        query = doc.get("Query") if isinstance(doc.get("Query"), dict) else {}
        if template == "/build" and query.get("networkmode") == "host":
            learned.host_namespaces.add("network")
        if template == "/images/create" and query.get("fromSrc"):
            learned.imports = True
        if template == "/images/load":
            learned.loads = True
        if template == "/networks/create" and isinstance(doc.get("Body"), dict):
            body = doc["Body"]
            learned.network_drivers.add(body.get("Driver") or "bridge")
            if isinstance(body.get("Name"), str):
                learned.network_names.add(body["Name"])
            if isinstance(body.get("Options"), dict):
                learned.network_options.update(body["Options"])
    return learned


def library_settings(learned: Learned, exempt: dict[str, set[str]]) -> dict[str, Any]:
    """``data.library`` narrowed to what was recorded."""
    def sorted_list(values: Iterable[str]) -> list[str]:
        return sorted(set(values))

    privileged: dict[str, Any] = {
        "allowed_capabilities": sorted_list(learned.capabilities),
        "allowed_devices": sorted_list(learned.devices),
        "allowed_security_opts": sorted_list(learned.security_opts),
    }
    settings: dict[str, Any] = {
        "enabled": True,
        "images": {"allowed": sorted_list(learned.images), "allow_import": learned.imports,
                   "allow_load": learned.loads},
        "privileged": privileged,
        "mounts": {"allowed_host_paths": sorted_list(learned.host_paths)},
        "namespaces": {"allowed_host_namespaces": sorted_list(learned.host_namespaces),
                       "allow_container_joins": learned.container_joins},
        "network": {"allowed_drivers": sorted_list(learned.network_drivers) or ["bridge"],
                    "name_patterns": [re.escape(n) for n in sorted(learned.network_names)]
                    or ["(?!)"],
                    "allowed_options": sorted_list(learned.network_options)},
    }
    exempt = {k: set(v) for k, v in exempt.items()}
    if learned.privileged_callers:
        exempt.setdefault("privileged", set()).update(learned.privileged_callers)
    for policy, callers in exempt.items():
        spec: dict[str, list] = {}
        for caller in sorted(callers):
            about = learned.callers.get(caller, {})
            if "uid" in about:
                spec.setdefault("uids", []).append(about["uid"])
        if spec:
            settings.setdefault(policy, {})["exempt"] = spec
    return settings


LEARNED_REGO = '''# Generated by dsfw learn from {source} on {when}:
# {requests} recorded requests by {callers} callers. Review before enforcing
# (docs/policies.md, "Learning a policy"); the values live in data.yaml.
#
# The base of this policy directory: a request is allowed when its caller was
# recorded sending this method to this route template (data.learned.callers),
# and the library policies beside it (images, privileged, mounts, ...) narrow
# the values. Everything else is denied with a message naming what was not seen.
package docker.authz

import rego.v1

import data.dsfw.library.common

default allow := false

allow if {{
	common.enabled
	learned_route
}}

# TLS clients by certificate subject, UNIX callers by uid (SO_PEERCRED).
learned_caller := sprintf("tls:%v", [input.Peer.Tls.SubjectCN]) if {{
	is_string(input.Peer.Tls.SubjectCN)
}} else := sprintf("uid:%v", [input.Peer.Uid]) if {{
	is_number(input.Peer.Uid)
}} else := "an unidentified caller"

learned_route if {{
	some route in data.learned.callers[learned_caller].routes
	route.method == input.Method
	route.template == input.Route
}}

deny contains msg if {{
	common.enabled
	not learned_route
	msg := sprintf("%v %v by %v was not seen while learning this policy (dsfw learn); add it to data.learned.callers if it is needed", [input.Method, object.get(input, "Route", input.PathPlain), learned_caller])
}}
'''


def _rego_string(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, ensure_ascii=True)


def learned_tests(recordings: list[Recording]) -> tuple[str, dict[str, Any]]:
    """One test per distinct recorded request, and the inputs they use (a data file)."""
    lines = ["# Generated by dsfw learn: every recorded request is allowed.",
             "# The inputs are in learned_inputs.json (data.learned_tests.inputs).",
             "package learned_test", "", "import rego.v1", ""]
    seen = set()
    inputs: dict[str, Any] = {}
    for rec in recordings:
        doc = redacted_input(rec.input)
        caller = caller_key(doc)
        if caller is None or (rec.package == AUTHZ and route_template(doc) is None):
            continue
        key = _rego_string({k: v for k, v in doc.items() if k != "Peer"} | {"caller": caller[0]})
        if key in seen:
            continue
        seen.add(key)
        n = str(len(inputs) + 1)
        inputs[n] = doc
        lines.append(f"# {os.path.basename(rec.path)}: {doc.get('Method')} "
                     f"{doc.get('Route', doc.get('PathPlain'))} by {caller[0]}")
        lines.append(f"test_recorded_{n} if {{")
        lines.append(f'\trecorded := data.learned_tests.inputs["{n}"]')
        lines.append(f"\tdata.{rec.package}.allow with input as recorded")
        lines.append(f"\tcount(data.{rec.package}.deny) == 0 with input as recorded")
        lines.append("}")
        lines.append("")
    return "\n".join(lines), {"learned_tests": {"inputs": inputs}}


def with_route(doc: dict[str, Any]) -> dict[str, Any]:
    """A recorded input as the daemon builds it today (recordings made before ``Route`` existed)."""
    if "Route" in doc or doc.get("PathPlain") is None:
        return doc
    template = route_template(doc)
    return {**doc, "Route": template} if template else doc


def default_library() -> str | None:
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    candidate = os.path.join(here, "policies", "library")
    return candidate if os.path.isdir(candidate) else None


def write_policy(output: str, library: str, learned: Learned, recordings: list[Recording],
                 source: str, exempt: dict[str, set[str]]) -> None:
    os.makedirs(output, exist_ok=True)
    for name in sorted(os.listdir(library)):
        if name.endswith(".rego") and not name.endswith("_test.rego") and name not in _NOT_COPIED:
            shutil.copyfile(os.path.join(library, name), os.path.join(output, name))
    data = {"library": library_settings(learned, exempt),
            "learned": {"callers": {
                caller: {**learned.callers[caller],
                         "routes": [{"method": m, "template": t} for m, t in sorted(found)]}
                for caller, found in sorted(learned.routes.items())}}}
    with open(os.path.join(output, "data.yaml"), "w", encoding="utf-8") as f:
        f.write(f"# Generated by dsfw learn from {source}; review, then enforce.\n")
        yaml.safe_dump(data, f, sort_keys=True, default_flow_style=False)
    with open(os.path.join(output, "learned.rego"), "w", encoding="utf-8") as f:
        f.write(LEARNED_REGO.format(source=source, when=time.strftime("%Y-%m-%d"),
                                    requests=len(recordings), callers=len(learned.callers)))
    tests, inputs = learned_tests(recordings)
    with open(os.path.join(output, "learned_test.rego"), "w", encoding="utf-8") as f:
        f.write(tests)
    with open(os.path.join(output, "learned_inputs.json"), "w", encoding="utf-8") as f:
        json.dump(inputs, f, sort_keys=True, indent=1)


def run(directory: str, output: str, library: str | None, out: TextIO) -> int:
    """Learn, write, then decide every recording with the result; 0 when all are allowed."""
    from dsfw.policy.embedded import EmbeddedEngine
    from dsfw.policy.loader import PolicyLoadError

    library = library or default_library()
    if library is None or not os.path.isfile(os.path.join(library, "common.rego")):
        raise LearnError("the policy library was not found; give --library DIR (policies/library)")
    if os.path.exists(output) and os.listdir(output):
        raise LearnError(f"{output} exists and is not empty; learn writes a new policy directory")
    recordings = [Recording(r.path, r.package, with_route(r.input))
                  for r in read_recordings(directory)]
    images_engine = EmbeddedEngine(library)

    def checked_images(doc: dict[str, Any]) -> list[str]:
        checked = images_engine.rule_value("data.dsfw.library.images._checked", doc)
        return [pair[0] for pair in checked or () if isinstance(pair, list) and pair
                and isinstance(pair[0], str)]

    learned = learn(recordings, checked_images)
    exempt: dict[str, set[str]] = {}
    for _ in range(3):  # the settings above, then exemptions for what no setting covers
        if os.path.exists(output):
            shutil.rmtree(output)
        write_policy(output, library, learned, recordings, directory, exempt)
        try:
            engine = EmbeddedEngine(output)
        except PolicyLoadError as e:
            raise LearnError(f"the generated policy does not load: {e}") from None
        refused = []
        for rec in recordings:
            if caller_key(rec.input) is None:
                continue
            decision = engine.evaluate(rec.package, rec.input)
            if not decision.allowed:
                refused.append((rec, decision, engine.deny_origins(rec.input)))
        added = _exempt_for(refused, exempt)
        if not added:
            break
    for line in learned.skipped:
        out.write(f"skipped {line}\n")
    for policy, callers in sorted(exempt.items()):
        out.write(f"note: {', '.join(sorted(callers))} exempt from library policy {policy}: a "
                  f"recorded request needs it and no setting of {policy} narrows it; review "
                  f"data.library.{policy}.exempt\n")
    for rec, decision, _ in refused:
        out.write(f"still refused {os.path.basename(rec.path)}: {decision.message()}\n")
    routes_count = sum(len(r) for r in learned.routes.values())
    out.write(f"learned {routes_count} routes for {len(learned.routes)} callers from "
              f"{len(recordings)} recordings into {output}\n")
    return 1 if refused else 0


def _exempt_for(refused, exempt: dict[str, set[str]]) -> bool:
    """Exempt callers from the library policy whose deny rule refused their recorded request."""
    added = False
    for rec, decision, origins in refused:
        caller = caller_key(rec.input)
        for reason in decision.reasons:
            for where in origins.get(reason, [])[:1]:
                policy = where.split(".rego:", 1)[0]
                if policy in ("learned", "collect", "collect_build", "common"):
                    continue
                if caller and caller[0] not in exempt.setdefault(policy, set()):
                    exempt[policy].add(caller[0])
                    added = True
    return added
