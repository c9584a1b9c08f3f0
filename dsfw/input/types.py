"""Docker Engine API 1.41 request types, as Go's ``encoding/json`` sees them.

dockerd decodes request bodies into Go structs.  Go matches an object key to
a struct field exactly if it can, otherwise case-insensitively (with Unicode
simple folding, so ``ſ`` U+017F matches ``s`` and ``K`` U+212A matches ``k``);
it ignores keys that match no field, and fields of embedded structs are
promoted to the outer object.  To show a policy what dockerd will act on, dsfw
needs the same field tables: this module holds them (transcribed from moby
20.10's ``api/types``) and computes Go's promoted-field lists from them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class Scalar:
    """A Go scalar; ``kind`` is ``string``, ``bool``, ``int`` or ``number`` (a float)."""

    kind: str


@dataclass(frozen=True)
class StrSlice:
    """moby's ``strslice.StrSlice``: a JSON string or a list of strings."""


@dataclass(frozen=True)
class ListOf:
    elem: "GoType"


@dataclass(frozen=True)
class MapOf:
    """A Go map with string keys: keys are data, never renamed."""

    value: "GoType"


@dataclass(frozen=True)
class Ptr:
    """A Go pointer: JSON null stores nil (matters inside lists and maps)."""

    elem: "GoType"


@dataclass(frozen=True)
class Field:
    """One Go struct field: its JSON key, or ``embedded`` for a promoted struct."""

    key: str
    type: "GoType"
    embedded: bool = False


@dataclass(frozen=True)
class FlatField:
    """A field as Go's decoder lists it, with the embedded field it came through."""

    key: str
    type: "GoType"
    via: str
    folded: str


@dataclass(frozen=True)
class Struct:
    name: str
    fields: tuple[Field, ...]
    flat: tuple[FlatField, ...] = field(default=(), compare=False)
    exact: dict = field(default_factory=dict, compare=False, hash=False)
    by_fold: dict = field(default_factory=dict, compare=False, hash=False)

    def lookup(self, key: str) -> FlatField | None:
        """The field Go's decoder stores ``key`` in, or None if Go ignores it."""
        hit = self.exact.get(key)
        if hit is not None:
            return hit
        return self.by_fold.get(go_fold(key))


GoType = Union[Scalar, StrSlice, ListOf, MapOf, Ptr, Struct]

STR = Scalar("string")
BOOL = Scalar("bool")
INT = Scalar("int")
NUMBER = Scalar("number")

_FOLD = {"\u017f": "s", "\u212a": "k"}


def go_fold(key: str) -> str:
    """Fold a key the way Go compares it to an (all-ASCII) field name.

    ASCII letters match either case; the long s and the Kelvin sign match
    ``s`` and ``k`` (Go's ``equalFoldRight``); any other character must be
    exact, which lower-casing only ASCII letters preserves.
    """
    out = []
    for ch in key:
        if "A" <= ch <= "Z":
            out.append(chr(ord(ch) + 32))
        else:
            out.append(_FOLD.get(ch, ch))
    return "".join(out)


def _flatten(fields: tuple[Field, ...], via: str, depth: int,
             acc: list[tuple[int, FlatField]]) -> None:
    for f in fields:
        if f.embedded:
            inner = f.type.elem if isinstance(f.type, Ptr) else f.type
            assert isinstance(inner, Struct)
            _flatten(inner.fields, via or f.key, depth + 1, acc)
        else:
            acc.append((depth, FlatField(f.key, f.type, via, f.key.lower())))


def struct(name: str, *fields: Field) -> Struct:
    """Build a struct type with Go's promoted-field table precomputed.

    Go keeps, for each JSON name, only the shallowest field; two at the same
    depth cancel out.  Docker's types have no such ties, so one is a bug in
    this table and fails loudly at import.  The list keeps declaration order,
    which is the order Go's case-insensitive fallback tries fields in.
    """
    acc: list[tuple[int, FlatField]] = []
    _flatten(fields, "", 0, acc)
    best: dict[str, int] = {}
    for depth, ff in acc:
        if ff.key in best and best[ff.key] == depth:
            raise AssertionError(f"{name}: two fields named {ff.key} at one depth")
        best[ff.key] = min(depth, best.get(ff.key, depth))
    flat = tuple(ff for depth, ff in acc if best[ff.key] == depth)
    exact = {ff.key: ff for ff in flat}
    by_fold: dict[str, FlatField] = {}
    for ff in flat:
        by_fold.setdefault(ff.folded, ff)
    return Struct(name, fields, flat, exact, by_fold)


def F(key: str, type_: GoType) -> Field:
    return Field(key, type_)


def E(key: str, type_: GoType) -> Field:
    return Field(key, type_, embedded=True)


STRS = ListOf(STR)
STRMAP = MapOf(STR)
EMPTY = struct("struct{}")

# api/types/container/config.go
HEALTH_CONFIG = struct(
    "HealthConfig", F("Test", STRS), F("Interval", INT), F("Timeout", INT),
    F("StartPeriod", INT), F("Retries", INT))

CONFIG = struct(
    "Config",
    F("Hostname", STR), F("Domainname", STR), F("User", STR),
    F("AttachStdin", BOOL), F("AttachStdout", BOOL), F("AttachStderr", BOOL),
    F("ExposedPorts", MapOf(EMPTY)), F("Tty", BOOL), F("OpenStdin", BOOL),
    F("StdinOnce", BOOL), F("Env", STRS), F("Cmd", StrSlice()),
    F("Healthcheck", Ptr(HEALTH_CONFIG)), F("ArgsEscaped", BOOL), F("Image", STR),
    F("Volumes", MapOf(EMPTY)), F("WorkingDir", STR), F("Entrypoint", StrSlice()),
    F("NetworkDisabled", BOOL), F("MacAddress", STR), F("OnBuild", STRS),
    F("Labels", STRMAP), F("StopSignal", STR), F("StopTimeout", Ptr(INT)),
    F("Shell", StrSlice()),
)

# api/types/container/host_config.go, api/types/blkiodev, go-units, api/types/mount
WEIGHT_DEVICE = struct("WeightDevice", F("Path", STR), F("Weight", INT))
THROTTLE_DEVICE = struct("ThrottleDevice", F("Path", STR), F("Rate", INT))
DEVICE_MAPPING = struct("DeviceMapping", F("PathOnHost", STR), F("PathInContainer", STR),
                        F("CgroupPermissions", STR))
DEVICE_REQUEST = struct("DeviceRequest", F("Driver", STR), F("Count", INT),
                        F("DeviceIDs", STRS), F("Capabilities", ListOf(STRS)),
                        F("Options", STRMAP))
ULIMIT = struct("Ulimit", F("Name", STR), F("Hard", INT), F("Soft", INT))

RESOURCES = struct(
    "Resources",
    F("CpuShares", INT), F("Memory", INT), F("NanoCpus", INT), F("CgroupParent", STR),
    F("BlkioWeight", INT), F("BlkioWeightDevice", ListOf(Ptr(WEIGHT_DEVICE))),
    F("BlkioDeviceReadBps", ListOf(Ptr(THROTTLE_DEVICE))),
    F("BlkioDeviceWriteBps", ListOf(Ptr(THROTTLE_DEVICE))),
    F("BlkioDeviceReadIOps", ListOf(Ptr(THROTTLE_DEVICE))),
    F("BlkioDeviceWriteIOps", ListOf(Ptr(THROTTLE_DEVICE))),
    F("CpuPeriod", INT), F("CpuQuota", INT), F("CpuRealtimePeriod", INT),
    F("CpuRealtimeRuntime", INT), F("CpusetCpus", STR), F("CpusetMems", STR),
    F("Devices", ListOf(DEVICE_MAPPING)), F("DeviceCgroupRules", STRS),
    F("DeviceRequests", ListOf(DEVICE_REQUEST)), F("KernelMemory", INT),
    F("KernelMemoryTCP", INT), F("MemoryReservation", INT), F("MemorySwap", INT),
    F("MemorySwappiness", Ptr(INT)), F("OomKillDisable", Ptr(BOOL)),
    F("PidsLimit", Ptr(INT)), F("Ulimits", ListOf(Ptr(ULIMIT))), F("CpuCount", INT),
    F("CpuPercent", INT), F("IOMaximumIOps", INT), F("IOMaximumBandwidth", INT),
)

LOG_CONFIG = struct("LogConfig", F("Type", STR), F("Config", STRMAP))
RESTART_POLICY = struct("RestartPolicy", F("Name", STR), F("MaximumRetryCount", INT))
PORT_BINDING = struct("PortBinding", F("HostIp", STR), F("HostPort", STR))

BIND_OPTIONS = struct("BindOptions", F("Propagation", STR), F("NonRecursive", BOOL))
DRIVER = struct("Driver", F("Name", STR), F("Options", STRMAP))
VOLUME_OPTIONS = struct("VolumeOptions", F("NoCopy", BOOL), F("Labels", STRMAP),
                        F("DriverConfig", Ptr(DRIVER)))
TMPFS_OPTIONS = struct("TmpfsOptions", F("SizeBytes", INT), F("Mode", INT))
MOUNT = struct(
    "Mount", F("Type", STR), F("Source", STR), F("Target", STR), F("ReadOnly", BOOL),
    F("Consistency", STR), F("BindOptions", Ptr(BIND_OPTIONS)),
    F("VolumeOptions", Ptr(VOLUME_OPTIONS)), F("TmpfsOptions", Ptr(TMPFS_OPTIONS)),
)

HOST_CONFIG = struct(
    "HostConfig",
    F("Binds", STRS), F("ContainerIDFile", STR), F("LogConfig", LOG_CONFIG),
    F("NetworkMode", STR), F("PortBindings", MapOf(ListOf(PORT_BINDING))),
    F("RestartPolicy", RESTART_POLICY), F("AutoRemove", BOOL), F("VolumeDriver", STR),
    F("VolumesFrom", STRS), F("CapAdd", StrSlice()), F("CapDrop", StrSlice()),
    F("CgroupnsMode", STR), F("Dns", STRS), F("DnsOptions", STRS), F("DnsSearch", STRS),
    F("ExtraHosts", STRS), F("GroupAdd", STRS), F("IpcMode", STR), F("Cgroup", STR),
    F("Links", STRS), F("OomScoreAdj", INT), F("PidMode", STR), F("Privileged", BOOL),
    F("PublishAllPorts", BOOL), F("ReadonlyRootfs", BOOL), F("SecurityOpt", STRS),
    F("StorageOpt", STRMAP), F("Tmpfs", STRMAP), F("UTSMode", STR), F("UsernsMode", STR),
    F("ShmSize", INT), F("Sysctls", STRMAP), F("Runtime", STR), F("ConsoleSize", ListOf(INT)),
    F("Isolation", STR), E("Resources", RESOURCES), F("Mounts", ListOf(MOUNT)),
    F("MaskedPaths", STRS), F("ReadonlyPaths", STRS), F("Init", Ptr(BOOL)),
)

# api/types/network/network.go
ENDPOINT_IPAM_CONFIG = struct("EndpointIPAMConfig", F("IPv4Address", STR),
                              F("IPv6Address", STR), F("LinkLocalIPs", STRS))
ENDPOINT_SETTINGS = struct(
    "EndpointSettings",
    F("IPAMConfig", Ptr(ENDPOINT_IPAM_CONFIG)), F("Links", STRS), F("Aliases", STRS),
    F("NetworkID", STR), F("EndpointID", STR), F("Gateway", STR), F("IPAddress", STR),
    F("IPPrefixLen", INT), F("IPv6Gateway", STR), F("GlobalIPv6Address", STR),
    F("GlobalIPv6PrefixLen", INT), F("MacAddress", STR), F("DriverOpts", STRMAP),
)
NETWORKING_CONFIG = struct("NetworkingConfig",
                           F("EndpointsConfig", MapOf(Ptr(ENDPOINT_SETTINGS))))

# runconfig/config_unix.go: the create (and legacy start, and commit) body.
# Fields of the embedded *HostConfig sit at the top level for old clients.
CONTAINER_CONFIG_WRAPPER = struct(
    "ContainerConfigWrapper",
    E("Config", Ptr(CONFIG)),
    F("HostConfig", Ptr(HOST_CONFIG)),
    F("Cpuset", STR),
    F("NetworkingConfig", Ptr(NETWORKING_CONFIG)),
    E("LegacyHostConfig", Ptr(HOST_CONFIG)),
)

UPDATE_CONFIG = struct("UpdateConfig", E("Resources", RESOURCES),
                       F("RestartPolicy", RESTART_POLICY))

# api/types/configs.go, api/types/client.go
EXEC_CONFIG = struct(
    "ExecConfig", F("User", STR), F("Privileged", BOOL), F("Tty", BOOL),
    F("AttachStdin", BOOL), F("AttachStderr", BOOL), F("AttachStdout", BOOL),
    F("Detach", BOOL), F("DetachKeys", STR), F("Env", STRS), F("WorkingDir", STR),
    F("Cmd", STRS),
)
EXEC_START_CHECK = struct("ExecStartCheck", F("Detach", BOOL), F("Tty", BOOL))

# api/types/types.go, api/types/network
IPAM_CONFIG = struct("IPAMConfig", F("Subnet", STR), F("IPRange", STR), F("Gateway", STR),
                     F("AuxiliaryAddresses", STRMAP))
IPAM = struct("IPAM", F("Driver", STR), F("Options", STRMAP),
              F("Config", ListOf(IPAM_CONFIG)))
CONFIG_REFERENCE = struct("ConfigReference", F("Network", STR))
NETWORK_CREATE = struct(
    "NetworkCreate", F("CheckDuplicate", BOOL), F("Driver", STR), F("Scope", STR),
    F("EnableIPv6", BOOL), F("IPAM", Ptr(IPAM)), F("Internal", BOOL), F("Attachable", BOOL),
    F("Ingress", BOOL), F("ConfigOnly", BOOL), F("ConfigFrom", Ptr(CONFIG_REFERENCE)),
    F("Options", STRMAP), F("Labels", STRMAP),
)
NETWORK_CREATE_REQUEST = struct("NetworkCreateRequest", E("NetworkCreate", NETWORK_CREATE),
                                F("Name", STR))
NETWORK_CONNECT = struct("NetworkConnect", F("Container", STR),
                         F("EndpointConfig", Ptr(ENDPOINT_SETTINGS)))
NETWORK_DISCONNECT = struct("NetworkDisconnect", F("Container", STR), F("Force", BOOL))

# api/types/volume/volume_create.go
VOLUME_CREATE_BODY = struct("VolumeCreateBody", F("Driver", STR), F("DriverOpts", STRMAP),
                            F("Labels", STRMAP), F("Name", STR))

# api/types/plugin.go
PLUGIN_PRIVILEGE = struct("PluginPrivilege", F("Name", STR), F("Description", STR),
                          F("Value", STRS))
PLUGIN_PRIVILEGES = ListOf(PLUGIN_PRIVILEGE)

# api/types/swarm (service.go, task.go, container.go, network.go, common.go,
# runtime/plugin.pb.go): the service spec of POST /services/create and update.
DURATION = INT
SWARM_DRIVER = struct("Driver", F("Name", STR), F("Options", STRMAP))
ANNOTATIONS = struct("Annotations", F("Name", STR), F("Labels", STRMAP))
NETWORK_ATTACHMENT_CONFIG = struct("NetworkAttachmentConfig", F("Target", STR),
                                   F("Aliases", STRS), F("DriverOpts", STRMAP))
SECRET_FILE = struct("SecretReferenceFileTarget", F("Name", STR), F("UID", STR),
                     F("GID", STR), F("Mode", INT))
SECRET_REFERENCE = struct("SecretReference", F("File", Ptr(SECRET_FILE)),
                          F("SecretID", STR), F("SecretName", STR))
CONFIG_REF = struct("ConfigReference", F("File", Ptr(SECRET_FILE)), F("Runtime", Ptr(EMPTY)),
                    F("ConfigID", STR), F("ConfigName", STR))
PRIVILEGES = struct(
    "Privileges",
    F("CredentialSpec", Ptr(struct("CredentialSpec", F("Config", STR), F("File", STR),
                                   F("Registry", STR)))),
    F("SELinuxContext", Ptr(struct("SELinuxContext", F("Disable", BOOL), F("User", STR),
                                   F("Role", STR), F("Type", STR), F("Level", STR)))),
)
DNS_CONFIG = struct("DNSConfig", F("Nameservers", STRS), F("Search", STRS), F("Options", STRS))
CONTAINER_SPEC = struct(
    "ContainerSpec",
    F("Image", STR), F("Labels", STRMAP), F("Command", STRS), F("Args", STRS),
    F("Hostname", STR), F("Env", STRS), F("Dir", STR), F("User", STR), F("Groups", STRS),
    F("Privileges", Ptr(PRIVILEGES)), F("Init", Ptr(BOOL)), F("StopSignal", STR),
    F("TTY", BOOL), F("OpenStdin", BOOL), F("ReadOnly", BOOL), F("Mounts", ListOf(MOUNT)),
    F("StopGracePeriod", Ptr(DURATION)), F("Healthcheck", Ptr(HEALTH_CONFIG)),
    F("Hosts", STRS), F("DNSConfig", Ptr(DNS_CONFIG)), F("Secrets", ListOf(Ptr(SECRET_REFERENCE))),
    F("Configs", ListOf(Ptr(CONFIG_REF))), F("Isolation", STR), F("Sysctls", STRMAP),
    F("CapabilityAdd", STRS), F("CapabilityDrop", STRS), F("Ulimits", ListOf(Ptr(ULIMIT))),
)
PLUGIN_SPEC = struct(
    "PluginSpec", F("name", STR), F("remote", STR),
    F("privileges", ListOf(Ptr(struct("PluginPrivilege", F("name", STR), F("description", STR),
                                      F("value", STRS))))),
    F("disabled", BOOL), F("env", STRS),
)
GENERIC_RESOURCE = struct(
    "GenericResource",
    F("NamedResourceSpec", Ptr(struct("NamedGenericResource", F("Kind", STR), F("Value", STR)))),
    F("DiscreteResourceSpec", Ptr(struct("DiscreteGenericResource", F("Kind", STR),
                                         F("Value", INT)))),
)
RESOURCE_REQUIREMENTS = struct(
    "ResourceRequirements",
    F("Limits", Ptr(struct("Limit", F("NanoCPUs", INT), F("MemoryBytes", INT), F("Pids", INT)))),
    F("Reservations", Ptr(struct("Resources", F("NanoCPUs", INT), F("MemoryBytes", INT),
                                 F("GenericResources", ListOf(GENERIC_RESOURCE))))),
)
SWARM_RESTART_POLICY = struct("RestartPolicy", F("Condition", STR), F("Delay", Ptr(DURATION)),
                              F("MaxAttempts", Ptr(INT)), F("Window", Ptr(DURATION)))
PLACEMENT = struct(
    "Placement", F("Constraints", STRS),
    F("Preferences", ListOf(struct("PlacementPreference", F("Spread", Ptr(struct(
        "SpreadOver", F("SpreadDescriptor", STR))))))),
    F("MaxReplicas", INT),
    F("Platforms", ListOf(struct("Platform", F("Architecture", STR), F("OS", STR)))),
)
TASK_SPEC = struct(
    "TaskSpec",
    F("ContainerSpec", Ptr(CONTAINER_SPEC)), F("PluginSpec", Ptr(PLUGIN_SPEC)),
    F("NetworkAttachmentSpec", Ptr(struct("NetworkAttachmentSpec", F("ContainerID", STR)))),
    F("Resources", Ptr(RESOURCE_REQUIREMENTS)), F("RestartPolicy", Ptr(SWARM_RESTART_POLICY)),
    F("Placement", Ptr(PLACEMENT)), F("Networks", ListOf(NETWORK_ATTACHMENT_CONFIG)),
    F("LogDriver", Ptr(SWARM_DRIVER)), F("ForceUpdate", INT), F("Runtime", STR),
)
SERVICE_MODE = struct(
    "ServiceMode",
    F("Replicated", Ptr(struct("ReplicatedService", F("Replicas", Ptr(INT))))),
    F("Global", Ptr(EMPTY)),
    F("ReplicatedJob", Ptr(struct("ReplicatedJob", F("MaxConcurrent", Ptr(INT)),
                                  F("TotalCompletions", Ptr(INT))))),
    F("GlobalJob", Ptr(EMPTY)),
)
SWARM_UPDATE_CONFIG = struct(
    "UpdateConfig", F("Parallelism", INT), F("Delay", DURATION), F("FailureAction", STR),
    F("Monitor", DURATION), F("MaxFailureRatio", NUMBER), F("Order", STR))
ENDPOINT_SPEC = struct(
    "EndpointSpec", F("Mode", STR),
    F("Ports", ListOf(struct("PortConfig", F("Name", STR), F("Protocol", STR),
                             F("TargetPort", INT), F("PublishedPort", INT),
                             F("PublishMode", STR)))),
)
SERVICE_SPEC = struct(
    "ServiceSpec",
    E("Annotations", ANNOTATIONS), F("TaskTemplate", TASK_SPEC), F("Mode", SERVICE_MODE),
    F("UpdateConfig", Ptr(SWARM_UPDATE_CONFIG)), F("RollbackConfig", Ptr(SWARM_UPDATE_CONFIG)),
    F("Networks", ListOf(NETWORK_ATTACHMENT_CONFIG)), F("EndpointSpec", Ptr(ENDPOINT_SPEC)),
)
