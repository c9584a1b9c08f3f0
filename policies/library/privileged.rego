# No privileged containers or exec, a capability allowlist, no host devices,
# no security options that switch confinement off, no unmasked /proc and
# /sys paths, no SELinux or credential-spec privileges for services.
#
# Uses the derived input.Privileged (containers, legacy start bodies and
# POST /containers/{id}/exec) and input.CapAdd (one spelling: CAP_SYS_ADMIN,
# or ALL), so every way of asking is caught.
#
# data.library.privileged:
#   allowed_capabilities: [NET_BIND_SERVICE, CHOWN]   # --cap-add beyond these is refused
#   allowed_devices: []           # host paths allowed in --device (PathOnHost)
#   allowed_security_opts: []     # --security-opt values allowed besides no-new-privileges;
#                                 # systempaths=unconfined allows emptied MaskedPaths/ReadonlyPaths
#   allowed_runtimes: []          # --runtime names besides dockerd's own runc ones
#   allowed_log_drivers: [json-file, local, none]   # --log-driver (default: these three)
#   allowed_log_options: {}       # driver → more --log-opt keys, e.g. {syslog: [syslog-facility]}
#   exempt: {users: [], groups: [], uids: [], gids: []}
package dsfw.library.privileged

import rego.v1

import data.dsfw.library.common

_name := "privileged"

_schema := {
	"allowed_capabilities": "list",
	"allowed_devices": "list",
	"allowed_security_opts": "list",
	"allowed_runtimes": "list",
	"allowed_log_drivers": "list",
	"allowed_log_options": "object",
	"exempt": "object",
}

_exec_create if data.dsfw.library.common.one_segment(input.PathPlain, "/containers/", "/exec")

deny contains msg if some msg in data.dsfw.library.common.config_problems(_name, _schema)

deny contains msg if {
	input.Privileged == true
	not data.dsfw.library.common.exempt(_name)
	_exec_create
	msg := "privileged exec is not allowed: run docker exec without --privileged"
}

deny contains msg if {
	input.Privileged == true
	not data.dsfw.library.common.exempt(_name)
	not _exec_create
	msg := "privileged containers are not allowed: drop --privileged and add only the capabilities you need with --cap-add (allowed: see data.library.privileged.allowed_capabilities)"
}

# The allowlist in dsfw's capability spelling, whatever the data says.
_allowed_caps contains _canonical_cap(c) if {
	some c in data.dsfw.library.common.list_setting(_name, "allowed_capabilities")
	is_string(c)
}

_canonical_cap(c) := upper(c) if startswith(upper(c), "CAP_")

_canonical_cap(c) := upper(c) if upper(c) == "ALL"

_canonical_cap(c) := concat("", ["CAP_", upper(c)]) if {
	not startswith(upper(c), "CAP_")
	upper(c) != "ALL"
}

_allowed_caps_text := concat(", ", sort(_allowed_caps)) if count(_allowed_caps) > 0

_allowed_caps_text := "none" if count(_allowed_caps) == 0

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some cap in input.CapAdd
	not cap in _allowed_caps
	msg := sprintf("capability %s is not allowed (--cap-add %s); allowed capabilities: %s", [cap, trim_prefix(cap, "CAP_"), _allowed_caps_text])
}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some device in object.get(common.host_config, "Devices", [])
	path := object.get(device, "PathOnHost", "")
	not path in data.dsfw.library.common.list_setting(_name, "allowed_devices")
	msg := sprintf("host device %s is not allowed: drop --device %s", [path, path])
}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some field, flag in {"DeviceCgroupRules": "--device-cgroup-rule", "DeviceRequests": "--gpus"}
	count(object.get(common.host_config, field, [])) > 0
	msg := sprintf("device access is not allowed: drop %s (HostConfig.%s)", [flag, field])
}

# no-new-privileges only tightens; everything else (seccomp/apparmor profiles,
# label=disable, systempaths=unconfined) can loosen confinement.
_tightening(opt) if opt in {"no-new-privileges", "no-new-privileges=true", "no-new-privileges:true"}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some opt in object.get(common.host_config, "SecurityOpt", [])
	not _tightening(opt)
	not opt in data.dsfw.library.common.list_setting(_name, "allowed_security_opts")
	msg := sprintf("security option %s is not allowed: drop --security-opt %s", [_short(opt), _short(opt)])
}

# seccomp=<profile> carries a whole JSON profile; show its start only.
_short(opt) := opt if count(opt) <= 60

_short(opt) := concat("", [substring(opt, 0, 57), "..."]) if count(opt) > 60

# --security-opt systempaths=unconfined is sent by the CLI as empty
# HostConfig.MaskedPaths and ReadonlyPaths. Any list there replaces dockerd's
# defaults (a null or absent one keeps them), so each default must be kept.
_default_paths := {
	"MaskedPaths": [
		"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
	],
	"ReadonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some field, defaults in _default_paths
	paths := common.host_config[field]
	missing := [p | some p in defaults; not p in paths]
	count(missing) > 0
	not "systempaths=unconfined" in data.dsfw.library.common.list_setting(_name, "allowed_security_opts")
	msg := sprintf("unconfined system paths are not allowed: HostConfig.%s leaves out %s (drop --security-opt systempaths=unconfined)", [field, concat(", ", missing)])
}

# A service's Privileges: SELinuxContext (label=disable and its kin) and
# CredentialSpec set the task container's security context.
deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some field, value in object.get(common.container_spec, "Privileges", {})
	value != null
	msg := sprintf("service privileges are not allowed: drop ContainerSpec.Privileges.%s (--credential-spec, SELinux options)", [field])
}

# --runtime: dockerd's built-in names all run runc with dockerd's confinement.
# Any other runtime is one an admin registered (daemon.json "runtimes"), with
# its own arguments and hooks -- the nvidia runtime, for one, gives GPUs to
# any container whose Env asks (NVIDIA_VISIBLE_DEVICES=all), without --gpus.
_builtin_runtimes := {"", "runc", "io.containerd.runc.v2", "io.containerd.runtime.v1.linux"}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	runtime := object.get(common.host_config, "Runtime", "")
	not runtime in _builtin_runtimes
	not runtime in data.dsfw.library.common.list_setting(_name, "allowed_runtimes")
	msg := sprintf("runtime %v is not allowed: drop --runtime %v (dockerd's runc is the default; or set data.library.privileged.allowed_runtimes)", [runtime, runtime])
}

# --log-driver and --log-opt. A log driver runs inside dockerd (or as a plugin
# with the host privileges plugins get) and writes where its options say:
# syslog-address=unix:///..., fluentd-address, gelf-address, splunk-url name
# host sockets and endpoints; syslog-tls-* and splunk-*ca* name host files
# dockerd reads; awslogs and gcplogs use the host's credentials. Only
# json-file, local and none keep a container's output below dockerd's own
# directory, so only they are allowed by default, and each option key must be
# one known to name no path, endpoint or credential (a key dockerd adds later
# is refused until listed).
_default_log_drivers := ["json-file", "local", "none"]

# dockerd's own keys for every driver (logger.ValidateLogOpts, the local cache
# of dual logging), then each safe driver's keys (its ValidateLogOpt).
_log_options_any := {"mode", "max-buffer-size", "cache-disabled", "cache-max-size", "cache-max-file", "cache-compress"}

_log_options := {
	"json-file": {"max-size", "max-file", "compress", "labels", "labels-regex", "env", "env-regex", "tag"},
	"local": {"max-size", "max-file", "compress"},
	"none": set(),
}

_log_drivers := [d | some d in _log_drivers_setting; is_string(d)]

_log_drivers_setting := v if {
	v := data.dsfw.library.common.setting(_name, "allowed_log_drivers", _default_log_drivers)
	is_array(v)
} else := []

_log_options_setting := v if {
	v := data.dsfw.library.common.setting(_name, "allowed_log_options", {})
	is_object(v)
} else := {}

# The keys allowed for a driver; "" is dockerd's default driver, whichever it is:
# only the keys safe for both json-file and local.
_log_keys_allowed(driver, key) if key in _log_options_any

_log_keys_allowed(driver, key) if key in object.get(_log_options, driver, set())

_log_keys_allowed("", key) if key in _log_options["json-file"]

_log_keys_allowed("", key) if key in _log_options["local"]

_log_keys_allowed(driver, key) if {
	extra := object.get(_log_options_setting, driver, [])
	is_array(extra)
	key in extra
}

# Where a request names a log driver: [driver, options].
_log_configs contains [object.get(lc, "Type", ""), object.get(lc, "Config", {})] if {
	lc := common.host_config.LogConfig
	is_object(lc)
}

_log_configs contains [object.get(ld, "Name", ""), object.get(ld, "Options", {})] if {
	common.service_request
	ld := input.Body.TaskTemplate.LogDriver
	is_object(ld)
}

# A swarm's default for every service task (docker swarm init/update --log-driver).
_log_configs contains [object.get(ld, "Name", ""), object.get(ld, "Options", {})] if {
	input.Method == "POST"
	some path, spec in {"/swarm/init": object.get(_body, "Spec", {}), "/swarm/update": _body}
	input.PathPlain == path
	is_object(spec)
	ld := object.get(spec, ["TaskDefaults", "LogDriver"], null)
	is_object(ld)
}

_body := b if {
	b := input.Body
	is_object(b)
} else := {}

_log_drivers_text := concat(", ", _log_drivers) if count(_log_drivers) > 0

_log_drivers_text := "none" if count(_log_drivers) == 0

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some [driver, _] in _log_configs
	driver != ""
	not driver in _log_drivers
	msg := sprintf("log driver %v is not allowed: drop --log-driver %v (it may send the container's output to host sockets, files or services; allowed log drivers: %s; or set data.library.privileged.allowed_log_drivers)", [driver, driver, _log_drivers_text])
}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some [driver, options] in _log_configs
	is_object(options)
	some key, _ in options
	not _log_keys_allowed(driver, key)
	msg := sprintf("log option %v is not allowed for log driver %v: drop --log-opt %v (only options that name no host path, address or credential are allowed; or set data.library.privileged.allowed_log_options)", [key, _log_driver_text(driver), key])
}

_log_driver_text(d) := d if d != ""

_log_driver_text("") := "(dockerd's default)"
