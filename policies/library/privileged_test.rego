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
