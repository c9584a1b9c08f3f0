package dsfw.library.stored_test

import rego.v1

_target(hc) := {"Kind": "container", "ID": "c1", "Name": "web", "Image": "busybox", "HostConfig": hc, "Mounts": []}

_on(route, path, hc) := {"Method": "POST", "PathPlain": path, "Route": route, "Query": {}, "Body": null, "Target": _target(hc), "BindMounts": [], "CapAdd": [], "Privileged": false}

_deny(inp, cfg) := d if d := data.dsfw.library.stored.deny with input as inp with data.library as cfg

test_privileged_container_cannot_be_started_or_entered if {
	_deny(_on("/containers/{id}/start", "/containers/web/start", {"Privileged": true}), {}) == {"container web was created with settings you may not use, so you may not start it: privileged containers are not allowed: drop --privileged and add only the capabilities you need with --cap-add (allowed: see data.library.privileged.allowed_capabilities)"}
	every route in ["/containers/{id}/restart", "/containers/{id}/exec", "/containers/{id}/attach", "/containers/{id}/attach/ws"] {
		count(_deny(_on(route, "/containers/web/x", {"Privileged": true}), {})) == 1
	}
}

test_stored_capabilities_and_namespaces if {
	d := _deny(_on("/containers/{id}/exec", "/containers/web/exec", {"CapAdd": ["sys_admin"], "PidMode": "host"}), {})
	count(d) == 2
	"container web was created with settings you may not use, so you may not run processes in it: the host's pid namespace is not allowed: drop --pid host (HostConfig.PidMode)" in d
	some msg in d
	contains(msg, "capability CAP_SYS_ADMIN is not allowed")
	count(_deny(_on("/containers/{id}/exec", "/containers/web/exec", {"CapAdd": ["CAP_CHOWN", "all"]}), {"privileged": {"allowed_capabilities": ["chown", "ALL"]}})) == 0
}

test_ordinary_containers_pass if {
	count(_deny(_on("/containers/{id}/start", "/containers/web/start", {"NetworkMode": "default", "Privileged": false, "CapAdd": null}), {})) == 0
	count(_deny(object.union(_on("/containers/{id}/stop", "/containers/web/stop", {"Privileged": true}), {}), {})) == 0
	count(_deny({"Method": "POST", "PathPlain": "/containers/web/start", "Route": "/containers/{id}/start", "Query": {}, "Target": null}, {})) == 0
}

test_stored_log_config_is_judged_at_create_only if {
	# dockerd merges its default driver and options into the stored LogConfig
	count(_deny(_on("/containers/{id}/start", "/containers/web/start", {"LogConfig": {"Type": "syslog", "Config": {"syslog-address": "udp://127.0.0.1:514"}}}), {})) == 0
	count(_deny(_on("/containers/{id}/start", "/containers/web/start", {"LogConfig": {"Type": "syslog", "Config": {}}, "Privileged": true}), {})) == 1
}

test_exempt_callers_may if {
	inp := object.union(_on("/containers/{id}/start", "/containers/web/start", {"Privileged": true}), {"Peer": {"User": "ops", "Uid": 5, "Group": "ops", "Gid": 5}})
	count(_deny(inp, {"privileged": {"exempt": {"users": ["ops"]}}})) == 0
}

test_settings_problems_are_not_repeated if {
	d := _deny(_on("/containers/{id}/start", "/containers/web/start", {"Privileged": true}), {"privileged": {"allowed_capabilities": "ALL"}})
	count(d) == 1
}

# HostConfigs as dockerd 20.10 stores them (docker inspect) for `docker create` and `docker create --privileged`.
_stored_plain := {
	"Binds": null,
	"ContainerIDFile": "",
	"LogConfig": {"Type": "json-file", "Config": {}},
	"NetworkMode": "default",
	"PortBindings": {},
	"RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
	"AutoRemove": false,
	"VolumeDriver": "",
	"VolumesFrom": null,
	"ConsoleSize": [0, 0],
	"CapAdd": null,
	"CapDrop": null,
	"CgroupnsMode": "host",
	"Dns": [],
	"DnsOptions": [],
	"DnsSearch": [],
	"ExtraHosts": null,
	"GroupAdd": null,
	"IpcMode": "private",
	"Cgroup": "",
	"Links": null,
	"OomScoreAdj": 0,
	"PidMode": "",
	"Privileged": false,
	"PublishAllPorts": false,
	"ReadonlyRootfs": false,
	"SecurityOpt": null,
	"UTSMode": "",
	"UsernsMode": "",
	"ShmSize": 67108864,
	"Runtime": "runc",
	"Isolation": "",
	"CpuShares": 0,
	"Memory": 0,
	"NanoCpus": 0,
	"CgroupParent": "",
	"BlkioWeight": 0,
	"BlkioWeightDevice": [],
	"BlkioDeviceReadBps": [],
	"BlkioDeviceWriteBps": [],
	"BlkioDeviceReadIOps": [],
	"BlkioDeviceWriteIOps": [],
	"CpuPeriod": 0,
	"CpuQuota": 0,
	"CpuRealtimePeriod": 0,
	"CpuRealtimeRuntime": 0,
	"CpusetCpus": "",
	"CpusetMems": "",
	"Devices": [],
	"DeviceCgroupRules": null,
	"DeviceRequests": null,
	"MemoryReservation": 0,
	"MemorySwap": 0,
	"MemorySwappiness": null,
	"OomKillDisable": false,
	"PidsLimit": null,
	"Ulimits": [],
	"CpuCount": 0,
	"CpuPercent": 0,
	"IOMaximumIOps": 0,
	"IOMaximumBandwidth": 0,
	"MaskedPaths": ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
	"ReadonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
}

_stored_privileged := {
	"Binds": null,
	"ContainerIDFile": "",
	"LogConfig": {"Type": "json-file", "Config": {}},
	"NetworkMode": "default",
	"PortBindings": {},
	"RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
	"AutoRemove": false,
	"VolumeDriver": "",
	"VolumesFrom": null,
	"ConsoleSize": [0, 0],
	"CapAdd": null,
	"CapDrop": null,
	"CgroupnsMode": "host",
	"Dns": [],
	"DnsOptions": [],
	"DnsSearch": [],
	"ExtraHosts": null,
	"GroupAdd": null,
	"IpcMode": "private",
	"Cgroup": "",
	"Links": null,
	"OomScoreAdj": 0,
	"PidMode": "",
	"Privileged": true,
	"PublishAllPorts": false,
	"ReadonlyRootfs": false,
	"SecurityOpt": ["label=disable"],
	"UTSMode": "",
	"UsernsMode": "",
	"ShmSize": 67108864,
	"Runtime": "runc",
	"Isolation": "",
	"CpuShares": 0,
	"Memory": 0,
	"NanoCpus": 0,
	"CgroupParent": "",
	"BlkioWeight": 0,
	"BlkioWeightDevice": [],
	"BlkioDeviceReadBps": [],
	"BlkioDeviceWriteBps": [],
	"BlkioDeviceReadIOps": [],
	"BlkioDeviceWriteIOps": [],
	"CpuPeriod": 0,
	"CpuQuota": 0,
	"CpuRealtimePeriod": 0,
	"CpuRealtimeRuntime": 0,
	"CpusetCpus": "",
	"CpusetMems": "",
	"Devices": [],
	"DeviceCgroupRules": null,
	"DeviceRequests": null,
	"MemoryReservation": 0,
	"MemorySwap": 0,
	"MemorySwappiness": null,
	"OomKillDisable": false,
	"PidsLimit": null,
	"Ulimits": [],
	"CpuCount": 0,
	"CpuPercent": 0,
	"IOMaximumIOps": 0,
	"IOMaximumBandwidth": 0,
	"MaskedPaths": null,
	"ReadonlyPaths": null,
}

test_real_stored_host_configs if {
	count(_deny(_on("/containers/{id}/start", "/containers/web/start", _stored_plain), {})) == 0
	count(_deny(_on("/containers/{id}/exec", "/containers/web/exec", _stored_plain), {})) == 0
	some msg in _deny(_on("/containers/{id}/start", "/containers/web/start", _stored_privileged), {})
	contains(msg, "privileged containers are not allowed")
}

# POST /exec/{id}/start of an exec instance made elsewhere (dockerd's socket, an exempt caller).
_exec_start(hc, process) := {"Method": "POST", "PathPlain": "/exec/e1/start", "Route": "/exec/{id}/start", "Query": {}, "Body": {"Detach": false, "Tty": false}, "Target": {"Kind": "exec", "ID": "e1", "Name": "", "Names": [], "Labels": {}, "Owner": null, "Container": _target(hc), "ProcessConfig": process}, "BindMounts": [], "CapAdd": [], "Privileged": false}

test_exec_start_judges_the_container_and_the_process if {
	some m1 in _deny(_exec_start({"CapAdd": ["SYS_ADMIN"]}, {"privileged": false, "user": "1000"}), {})
	contains(m1, "container web was created with settings you may not use, so you may not start a process in it: capability CAP_SYS_ADMIN is not allowed")
	some m2 in _deny(_exec_start(_stored_plain, {"privileged": true, "user": "1000"}), {})
	startswith(m2, "exec instance e1 was created with settings you may not use, so you may not start it: privileged exec is not allowed")
	some m3 in _deny(_exec_start(_stored_plain, {"privileged": false, "user": "00:0"}), {})
	contains(m3, "as root is not allowed")
	count(_deny(_exec_start(_stored_plain, {"privileged": false, "user": "1000"}), {})) == 0
	count(_deny(_exec_start(_stored_plain, {"privileged": false, "user": "0"}), {"users": {"allow_root": true}})) == 0
}

test_stored_settings_without_one_spelling_are_refused if {
	inp := object.union(_on("/containers/{id}/start", "/containers/web/start", {"Privileged": false}), {"Target": {"HostConfigError": "HostConfig.Devices[0]: not clean"}})
	_deny(inp, {}) == {"container web was created with settings dsfw cannot read in one spelling, so you may not start it: HostConfig.Devices[0]: not clean"}
	count(_deny(object.union(inp, {"Route": "/containers/{id}/stop"}), {})) == 0
}

# docker cp into it runs the caller's files with its privileges; reading from it does not.
test_copying_into_a_privileged_container_is_refused if {
	inp := object.union(_on("/containers/{id}/archive", "/containers/web/archive", {"CapAdd": ["SYS_ADMIN"]}), {"Method": "PUT"})
	d := _deny(inp, {})
	count(d) == 1
	some msg in d
	startswith(msg, "container web was created with settings you may not use, so you may not copy files into it: capability CAP_SYS_ADMIN is not allowed")
	count(_deny(object.union(inp, {"Method": "GET"}), {})) == 0
	count(_deny(object.union(inp, {"Method": "HEAD"}), {})) == 0
	count(_deny(_on("/containers/{id}/archive", "/containers/web/archive", {"CapAdd": null}), {})) == 0
}

# A restart policy lets dockerd start it later without asking; other updates pass.
test_restart_policy_for_a_privileged_container_is_refused if {
	on := _on("/containers/{id}/update", "/containers/web/update", {"Privileged": true})
	every name in ["always", "unless-stopped", "on-failure"] {
		d := _deny(object.union(on, {"Body": {"RestartPolicy": {"Name": name}}}), {})
		some msg in d
		startswith(msg, "container web was created with settings you may not use, so you may not have dockerd restart it on its own: privileged containers are not allowed")
	}
	count(_deny(object.union(on, {"Body": {"RestartPolicy": {"Name": "no"}}}), {})) == 0
	count(_deny(object.union(on, {"Body": {"CpuShares": 512}}), {})) == 0
	count(_deny(on, {})) == 0 # no body: nothing set (dockerd refuses it), no evaluation error
	count(_deny(object.union(_on("/containers/{id}/update", "/containers/web/update", {}), {"Body": {"RestartPolicy": {"Name": "always"}}}), {})) == 0
}
