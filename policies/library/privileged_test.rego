package dsfw.library.privileged_test

import rego.v1

_create(hc, facts) := object.union({"Method": "POST", "PathPlain": "/containers/create", "Query": {}, "Body": {"Image": "busybox", "HostConfig": hc}, "Privileged": false, "CapAdd": [], "BindMounts": []}, facts)

_cfg := {"privileged": {"allowed_capabilities": ["net_bind_service", "CAP_CHOWN"]}}

_deny(inp) := d if d := data.dsfw.library.privileged.deny with input as inp with data.library as _cfg

test_plain_container_passes if {
	count(_deny(_create({}, {}))) == 0
}

test_privileged_container if {
	_deny(_create({"Privileged": true}, {"Privileged": true})) == {"privileged containers are not allowed: drop --privileged and add only the capabilities you need with --cap-add (allowed: see data.library.privileged.allowed_capabilities)"}
}

test_privileged_exec if {
	_deny({"Method": "POST", "PathPlain": "/containers/c1/exec", "Query": {}, "Body": {"Privileged": true}, "Privileged": true, "CapAdd": []}) == {"privileged exec is not allowed: run docker exec without --privileged"}
}

test_capability_allowlist if {
	count(_deny(_create({}, {"CapAdd": ["CAP_NET_BIND_SERVICE", "CAP_CHOWN"]}))) == 0
	_deny(_create({}, {"CapAdd": ["CAP_SYS_ADMIN"]})) == {"capability CAP_SYS_ADMIN is not allowed (--cap-add SYS_ADMIN); allowed capabilities: CAP_CHOWN, CAP_NET_BIND_SERVICE"}
	some msg in _deny(_create({}, {"CapAdd": ["ALL"]}))
	startswith(msg, "capability ALL is not allowed")
}

test_no_capabilities_configured if {
	some msg in data.dsfw.library.privileged.deny with input as _create({}, {"CapAdd": ["CAP_CHOWN"]}) with data.library as {}
	endswith(msg, "allowed capabilities: none")
}

test_devices if {
	_deny(_create({"Devices": [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda"}]}, {})) == {"host device /dev/sda is not allowed: drop --device /dev/sda"}
	count(data.dsfw.library.privileged.deny) == 0 with input as _create({"Devices": [{"PathOnHost": "/dev/fuse"}]}, {}) with data.library as {"privileged": {"allowed_devices": ["/dev/fuse"]}}
	_deny(_create({"DeviceRequests": [{"Count": -1}]}, {})) == {"device access is not allowed: drop --gpus (HostConfig.DeviceRequests)"}
	_deny(_create({"DeviceCgroupRules": ["c 1:3 rwm"]}, {})) == {"device access is not allowed: drop --device-cgroup-rule (HostConfig.DeviceCgroupRules)"}
}

test_security_opts if {
	count(_deny(_create({"SecurityOpt": ["no-new-privileges", "no-new-privileges:true"]}, {}))) == 0
	_deny(_create({"SecurityOpt": ["seccomp=unconfined"]}, {})) == {"security option seccomp=unconfined is not allowed: drop --security-opt seccomp=unconfined"}
	some msg in _deny(_create({"SecurityOpt": ["seccomp={\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [], \"architectures\": [\"SCMP_ARCH_X86_64\"]}"]}, {}))
	contains(msg, "...")
	count(data.dsfw.library.privileged.deny) == 0 with input as _create({"SecurityOpt": ["apparmor=myprofile"]}, {}) with data.library as {"privileged": {"allowed_security_opts": ["apparmor=myprofile"]}}
}

test_exempt_group if {
	count(data.dsfw.library.privileged.deny) == 0 with input as _create({"Privileged": true}, {"Privileged": true, "Peer": {"User": "root", "Uid": 0, "Group": "admins", "Gid": 10}})
		with data.library as {"privileged": {"exempt": {"groups": ["admins"]}}}
}

test_config_problems if {
	"dsfw library: data.library.privileged.allowed_capabilities must be a list; fix data.yaml" in data.dsfw.library.privileged.deny with input as _create({}, {}) with data.library as {"privileged": {"allowed_capabilities": "ALL"}}
}

_masked := ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"]

test_system_paths if {
	# what the CLI sends for --security-opt systempaths=unconfined
	d := _deny(_create({"MaskedPaths": [], "ReadonlyPaths": []}, {}))
	count(d) == 2
	"unconfined system paths are not allowed: HostConfig.ReadonlyPaths leaves out /proc/bus, /proc/fs, /proc/irq, /proc/sys, /proc/sysrq-trigger (drop --security-opt systempaths=unconfined)" in d
	some msg in _deny(_create({"MaskedPaths": array.concat(_masked, ["/proc/extra"])}, {})) | {"none"}
	msg == "none"
	_deny(_create({"MaskedPaths": ["/proc/kcore"]}, {})) == {"unconfined system paths are not allowed: HostConfig.MaskedPaths leaves out /proc/asound, /proc/acpi, /proc/keys, /proc/latency_stats, /proc/timer_list, /proc/timer_stats, /proc/sched_debug, /proc/scsi, /sys/firmware (drop --security-opt systempaths=unconfined)"}
	count(data.dsfw.library.privileged.deny) == 0 with input as _create({"MaskedPaths": [], "ReadonlyPaths": []}, {}) with data.library as {"privileged": {"allowed_security_opts": ["systempaths=unconfined"]}}
}

test_service_privileges if {
	svc := {"Method": "POST", "PathPlain": "/services/create", "Query": {}, "Body": {"TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Privileges": {"SELinuxContext": {"Disable": true}}}}}}
	_deny(svc) == {"service privileges are not allowed: drop ContainerSpec.Privileges.SELinuxContext (--credential-spec, SELinux options)"}
	count(_deny({"Method": "POST", "PathPlain": "/services/create", "Query": {}, "Body": {"TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Privileges": {}}}}})) == 0
}

test_runtimes if {
	count(_deny(_create({"Runtime": "io.containerd.runc.v2"}, {}))) == 0
	count(_deny(_create({"Runtime": "runc"}, {}))) == 0
	_deny(_create({"Runtime": "nvidia"}, {})) == {"runtime nvidia is not allowed: drop --runtime nvidia (dockerd's runc is the default; or set data.library.privileged.allowed_runtimes)"}
	count(data.dsfw.library.privileged.deny) == 0 with input as _create({"Runtime": "runsc"}, {}) with data.library as {"privileged": {"allowed_runtimes": ["runsc"]}}
}

_log(type, config) := _create({"LogConfig": {"Type": type, "Config": config}}, {})

test_log_drivers if {
	count(_deny(_log("", {}))) == 0
	count(_deny(_log("json-file", {"max-size": "1m", "max-file": "3", "compress": "true", "tag": "{{.Name}}", "labels": "a", "env": "B", "mode": "non-blocking", "max-buffer-size": "4m"}))) == 0
	count(_deny(_log("local", {"max-size": "1m", "cache-disabled": "true"}))) == 0
	count(_deny(_log("none", {}))) == 0
	_deny(_log("syslog", {})) == {"log driver syslog is not allowed: drop --log-driver syslog (it may send the container's output to host sockets, files or services; allowed log drivers: json-file, local, none; or set data.library.privileged.allowed_log_drivers)"}
	some msg in _deny(_log("vieux/log-plugin:latest", {}))
	startswith(msg, "log driver vieux/log-plugin:latest is not allowed")
	count(data.dsfw.library.privileged.deny) == 0 with input as _log("syslog", {"syslog-facility": "daemon"}) with data.library as {"privileged": {"allowed_log_drivers": ["syslog"], "allowed_log_options": {"syslog": ["syslog-facility"]}}}
	# allowing a driver allows none of its own options
	only_driver := data.dsfw.library.privileged.deny with input as _log("syslog", {"syslog-address": "unix:///dev/log"}) with data.library as {"privileged": {"allowed_log_drivers": ["syslog"]}}
	only_driver == {"log option syslog-address is not allowed for log driver syslog: drop --log-opt syslog-address (only options that name no host path, address or credential are allowed; or set data.library.privileged.allowed_log_options)"}
	# allowed_log_drivers: [] leaves dockerd's default only
	some msg2 in data.dsfw.library.privileged.deny with input as _log("json-file", {}) with data.library as {"privileged": {"allowed_log_drivers": []}}
	contains(msg2, "allowed log drivers: none")
}

test_log_options if {
	_deny(_log("json-file", {"syslog-address": "unix:///dev/log"})) == {"log option syslog-address is not allowed for log driver json-file: drop --log-opt syslog-address (only options that name no host path, address or credential are allowed; or set data.library.privileged.allowed_log_options)"}
	_deny(_log("local", {"tag": "x"})) == {"log option tag is not allowed for log driver local: drop --log-opt tag (only options that name no host path, address or credential are allowed; or set data.library.privileged.allowed_log_options)"}
	# dockerd's default driver (an admin's syslog or fluentd, perhaps): only the keys safe for json-file and local
	count(_deny(_log("", {"max-size": "1m", "tag": "x"}))) == 0
	_deny(_log("", {"fluentd-address": "unix:///run/docker.sock"})) == {"log option fluentd-address is not allowed for log driver (dockerd's default): drop --log-opt fluentd-address (only options that name no host path, address or credential are allowed; or set data.library.privileged.allowed_log_options)"}
	count(_deny(_log("none", {"max-size": "1m"}))) == 1
}

test_service_and_swarm_log_drivers if {
	svc := {"Method": "POST", "PathPlain": "/services/create", "Query": {}, "Body": {"TaskTemplate": {"ContainerSpec": {"Image": "busybox"}, "LogDriver": {"Name": "gelf", "Options": {"gelf-address": "udp://127.0.0.1:1"}}}}}
	_deny(svc) == {
		"log driver gelf is not allowed: drop --log-driver gelf (it may send the container's output to host sockets, files or services; allowed log drivers: json-file, local, none; or set data.library.privileged.allowed_log_drivers)",
		"log option gelf-address is not allowed for log driver gelf: drop --log-opt gelf-address (only options that name no host path, address or credential are allowed; or set data.library.privileged.allowed_log_options)",
	}
	safe := {"Method": "POST", "PathPlain": "/services/create", "Query": {}, "Body": {"TaskTemplate": {"ContainerSpec": {"Image": "busybox"}, "LogDriver": {"Name": "json-file", "Options": {"max-size": "1m"}}}}}
	count(_deny(safe)) == 0
	count(_deny(object.union(svc, {"PathPlain": "/services/abc/update"}))) == 2
	init := {"Method": "POST", "PathPlain": "/swarm/init", "Query": {}, "Body": {"ListenAddr": "0.0.0.0:2377", "Spec": {"TaskDefaults": {"LogDriver": {"Name": "splunk", "Options": {}}}}}}
	some msg in _deny(init)
	startswith(msg, "log driver splunk is not allowed")
	update := {"Method": "POST", "PathPlain": "/swarm/update", "Query": {"version": ["1"]}, "Body": {"TaskDefaults": {"LogDriver": {"Name": "json-file", "Options": {"splunk-url": "x"}}}}}
	some msg3 in _deny(update)
	startswith(msg3, "log option splunk-url is not allowed for log driver json-file")
}

test_legacy_start_log_config if {
	start := {"Method": "POST", "PathPlain": "/containers/c1/start", "Query": {}, "Body": {"HostConfig": {"LogConfig": {"Type": "fluentd", "Config": {"fluentd-address": "unix:///run/x.sock"}}}}, "Privileged": false, "CapAdd": []}
	count(_deny(start)) == 2
}
