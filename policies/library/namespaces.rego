# No host PID/IPC/network/UTS/user/cgroup namespaces, no joining another
# container's namespaces (--pid container:x, --network container:x, ...),
# no builds on the host network or in another container's network, no swarm
# services on the host network.
#
# data.library.namespaces:
#   allowed_host_namespaces: []     # any of pid, ipc, network, uts, userns, cgroupns
#   allow_container_joins: false    # --pid/--ipc/--network container:<name>
#   exempt: {users: [], groups: [], uids: [], gids: []}
package dsfw.library.namespaces

import rego.v1

import data.dsfw.library.common

_name := "namespaces"

_schema := {"allowed_host_namespaces": "list", "allow_container_joins": "bool", "exempt": "object"}

# namespace name → [HostConfig field, docker run flag]
_fields := {
	"pid": ["PidMode", "--pid"],
	"ipc": ["IpcMode", "--ipc"],
	"network": ["NetworkMode", "--network"],
	"uts": ["UTSMode", "--uts"],
	"userns": ["UsernsMode", "--userns"],
	"cgroupns": ["CgroupnsMode", "--cgroupns"],
}

deny contains msg if some msg in data.dsfw.library.common.config_problems(_name, _schema)

# dockerd compares "host" exactly; any spelling of it is refused here anyway.
deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some ns, [field, flag] in _fields
	lower(object.get(common.host_config, field, "")) == "host"
	not ns in data.dsfw.library.common.list_setting(_name, "allowed_host_namespaces")
	msg := sprintf("the host's %s namespace is not allowed: drop %s host (HostConfig.%s)", [ns, flag, field])
}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some ns, [field, flag] in _fields
	mode := object.get(common.host_config, field, "")
	startswith(lower(mode), "container:")
	not data.dsfw.library.common.setting(_name, "allow_container_joins", false) == true
	msg := sprintf("joining another container's %s namespace is not allowed: drop %s %s", [ns, flag, mode])
}

# A container attached to the "host" network through NetworkingConfig.
deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	common.container_create
	endpoints := object.get(object.get(input.Body, "NetworkingConfig", {}), "EndpointsConfig", {})
	some name, _ in endpoints
	lower(name) == "host"
	not "network" in data.dsfw.library.common.list_setting(_name, "allowed_host_namespaces")
	msg := "the host's network namespace is not allowed: do not attach the container to the host network"
}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	input.Method == "POST"
	data.dsfw.library.common.one_segment(input.PathPlain, "/networks/", "/connect")
	lower(split(input.PathPlain, "/")[2]) == "host"
	not "network" in data.dsfw.library.common.list_setting(_name, "allowed_host_namespaces")
	msg := "the host's network namespace is not allowed: do not connect containers to the host network"
}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	input.Method == "POST"
	input.PathPlain == "/build"
	lower(data.dsfw.library.common.query("networkmode")) == "host"
	not "network" in data.dsfw.library.common.list_setting(_name, "allowed_host_namespaces")
	msg := "building on the host's network is not allowed: drop --network host from docker build"
}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	input.Method == "POST"
	input.PathPlain == "/build"
	mode := data.dsfw.library.common.query("networkmode")
	startswith(lower(mode), "container:")
	not data.dsfw.library.common.setting(_name, "allow_container_joins", false) == true
	msg := sprintf("building in another container's network namespace is not allowed: drop --network %s from docker build", [mode])
}

# A service on the host network: TaskTemplate.Networks (or the deprecated
# top-level Networks) naming "host". Swarm also finds the host network by
# its ID or an ID prefix, which a policy cannot tell from a name: all-hex
# targets are refused too (name networks by name).
_service_networks contains target if {
	common.service_request
	some field in [object.get(input.Body, ["TaskTemplate", "Networks"], []), object.get(input.Body, "Networks", [])]
	is_array(field)
	some attachment in field
	target := object.get(attachment, "Target", "")
}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some target in _service_networks
	lower(target) == "host"
	not "network" in data.dsfw.library.common.list_setting(_name, "allowed_host_namespaces")
	msg := "the host's network namespace is not allowed: drop --network host from the service"
}

deny contains msg if {
	not data.dsfw.library.common.exempt(_name)
	some target in _service_networks
	data.dsfw.library.common.only_of(target, "0123456789abcdefABCDEF") # `^[0-9a-fA-F]+$`
	msg := sprintf("service network %s looks like a network ID, which could be the host network's: name the network by its name", [target])
}
