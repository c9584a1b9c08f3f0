"""Request bodies the docker CLI 28 sends (negotiated down to API 1.41), captured verbatim.

Recorded from `docker create/run/exec/network/volume` against a socket that
answers every request with an error, so no daemon acted on them.
"""
from __future__ import annotations

import json

import pytest

from dsfw.input.body import canonicalize_body
from dsfw.input.path import canonical_target

CLI_BODIES = [
    ('/v1.41/containers/create?name=t1',
     '{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":true,"AttachStderr":true,"ExposedPorts":{"80/tcp":{}},"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":["A=1"],"Cmd":["true"],"Healthcheck":{"Test":["CMD-SHELL","true"]},"Image":"localbusybox","Volumes":{},"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":{"x":"y"},"HostConfig":{"Binds":["/etc:/e:ro"],"ContainerIDFile":"","LogConfig":{"Type":"","Config":{}},"NetworkMode":"host","PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"8080"}]},"RestartPolicy":{"Name":"always","MaximumRetryCount":0},"AutoRemove":false,"VolumeDriver":"","VolumesFrom":null,"ConsoleSize":[0,0],"CapAdd":["CAP_SYS_ADMIN"],"CapDrop":["ALL"],"CgroupnsMode":"","Dns":["1.1.1.1"],"DnsOptions":[],"DnsSearch":[],"ExtraHosts":["a:1.2.3.4"],"GroupAdd":null,"IpcMode":"","Cgroup":"","Links":null,"OomScoreAdj":0,"PidMode":"","Privileged":true,"PublishAllPorts":false,"ReadonlyRootfs":false,"SecurityOpt":["no-new-privileges"],"Tmpfs":{"/run":""},"UTSMode":"","UsernsMode":"","ShmSize":0,"Sysctls":{"net.ipv4.ip_forward":"1"},"Isolation":"","CpuShares":0,"Memory":67108864,"NanoCpus":0,"CgroupParent":"","BlkioWeight":0,"BlkioWeightDevice":[],"BlkioDeviceReadBps":[],"BlkioDeviceWriteBps":[],"BlkioDeviceReadIOps":[],"BlkioDeviceWriteIOps":[],"CpuPeriod":0,"CpuQuota":0,"CpuRealtimePeriod":0,"CpuRealtimeRuntime":0,"CpusetCpus":"","CpusetMems":"","Devices":[{"PathOnHost":"/dev/null","PathInContainer":"/dev/n","CgroupPermissions":"rwm"}],"DeviceCgroupRules":null,"DeviceRequests":null,"MemoryReservation":0,"MemorySwap":0,"MemorySwappiness":-1,"OomKillDisable":false,"PidsLimit":10,"Ulimits":[{"Name":"nofile","Hard":20,"Soft":10}],"CpuCount":0,"CpuPercent":0,"IOMaximumIOps":0,"IOMaximumBandwidth":0,"Mounts":[{"Type":"bind","Source":"/tmp","Target":"/m"},{"Type":"volume","Target":"/v","VolumeOptions":{"DriverConfig":{"Name":"local","Options":{"device":"/root","o":"bind","type":"none"}}}}],"MaskedPaths":null,"ReadonlyPaths":null,"Init":true},"NetworkingConfig":{"EndpointsConfig":{}}}'),
    ('/v1.41/containers/t1/exec',
     '{"User":"root","Privileged":true,"Tty":false,"AttachStdin":false,"AttachStderr":true,"AttachStdout":true,"Detach":false,"DetachKeys":"","Env":null,"WorkingDir":"","Cmd":["sh"]}'),
    ('/v1.41/containers/create',
     '{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":["true"],"Image":"localbusybox","Volumes":{},"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":{},"HostConfig":{"Binds":null,"ContainerIDFile":"","LogConfig":{"Type":"","Config":{}},"NetworkMode":"default","PortBindings":{},"RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":false,"VolumeDriver":"","VolumesFrom":null,"ConsoleSize":[0,0],"CapAdd":null,"CapDrop":null,"CgroupnsMode":"","Dns":[],"DnsOptions":[],"DnsSearch":[],"ExtraHosts":null,"GroupAdd":null,"IpcMode":"","Cgroup":"","Links":null,"OomScoreAdj":0,"PidMode":"","Privileged":false,"PublishAllPorts":false,"ReadonlyRootfs":false,"SecurityOpt":null,"UTSMode":"","UsernsMode":"","ShmSize":0,"Isolation":"","CpuShares":0,"Memory":0,"NanoCpus":0,"CgroupParent":"","BlkioWeight":0,"BlkioWeightDevice":[],"BlkioDeviceReadBps":[],"BlkioDeviceWriteBps":[],"BlkioDeviceReadIOps":[],"BlkioDeviceWriteIOps":[],"CpuPeriod":0,"CpuQuota":0,"CpuRealtimePeriod":0,"CpuRealtimeRuntime":0,"CpusetCpus":"","CpusetMems":"","Devices":[],"DeviceCgroupRules":null,"DeviceRequests":null,"MemoryReservation":0,"MemorySwap":0,"MemorySwappiness":-1,"OomKillDisable":false,"PidsLimit":0,"Ulimits":[],"CpuCount":0,"CpuPercent":0,"IOMaximumIOps":0,"IOMaximumBandwidth":0,"MaskedPaths":null,"ReadonlyPaths":null},"NetworkingConfig":{"EndpointsConfig":{"default":{"IPAMConfig":null,"Links":null,"Aliases":null,"MacAddress":"","DriverOpts":null,"GwPriority":0,"NetworkID":"","EndpointID":"","Gateway":"","IPAddress":"","IPPrefixLen":0,"IPv6Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"DNSNames":null}}}}'),
    ('/v1.41/networks/n1/connect',
     '{"Container":"t1","EndpointConfig":{"IPAMConfig":{"IPv4Address":"10.9.0.9"},"Links":null,"Aliases":["al"],"MacAddress":"","DriverOpts":{},"GwPriority":0,"NetworkID":"","EndpointID":"","Gateway":"","IPAddress":"","IPPrefixLen":0,"IPv6Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"DNSNames":null}}'),
    ('/v1.41/networks/create',
     '{"Driver":"bridge","Scope":"","IPAM":{"Driver":"default","Options":{},"Config":[{"Subnet":"10.9.0.0/16","AuxiliaryAddresses":{"a":"10.9.0.5"}}]},"Internal":false,"Attachable":false,"Ingress":false,"ConfigOnly":false,"ConfigFrom":null,"Options":{"com.x":"y"},"Labels":{},"Name":"n1","CheckDuplicate":true}'),
    ('/v1.41/volumes/create',
     '{"Driver":"local","DriverOpts":{"device":"/etc","o":"bind","type":"none"},"Name":"v1"}'),
    ('/v1.41/containers/t1/update',
     '{"CpuShares":0,"Memory":134217728,"NanoCpus":0,"CgroupParent":"","BlkioWeight":0,"BlkioWeightDevice":null,"BlkioDeviceReadBps":null,"BlkioDeviceWriteBps":null,"BlkioDeviceReadIOps":null,"BlkioDeviceWriteIOps":null,"CpuPeriod":0,"CpuQuota":0,"CpuRealtimePeriod":0,"CpuRealtimeRuntime":0,"CpusetCpus":"","CpusetMems":"","Devices":null,"DeviceCgroupRules":null,"DeviceRequests":null,"MemoryReservation":0,"MemorySwap":0,"MemorySwappiness":null,"OomKillDisable":null,"PidsLimit":null,"Ulimits":null,"CpuCount":0,"CpuPercent":0,"IOMaximumIOps":0,"IOMaximumBandwidth":0,"RestartPolicy":{"Name":"no","MaximumRetryCount":0}}'),
    ('/v1.41/services/create',
     '{"Name":"s1","Labels":{"l":"1"},"TaskTemplate":{"ContainerSpec":{"Image":"localbusybox:latest","Labels":{"c":"1"},"Args":["sleep","10"],"Hostname":"h","Env":["A=1"],"Init":true,"ReadOnly":true,"Mounts":[{"Type":"bind","Source":"/etc","Target":"/e"}],"Healthcheck":{"Test":["CMD-SHELL","true"]},"Hosts":["1.2.3.4 a"],"DNSConfig":{"Nameservers":["1.1.1.1"]},"Sysctls":{"net.core.somaxconn":"100"},"CapabilityAdd":["CAP_SYS_ADMIN"],"Ulimits":[{"Name":"nofile","Hard":2,"Soft":1}]},"Resources":{"Limits":{"MemoryBytes":67108864},"Reservations":{"NanoCPUs":500000000}},"RestartPolicy":{"Condition":"any","Delay":5000000000,"MaxAttempts":0},"Placement":{"Constraints":["node.role==manager"],"Preferences":[{"Spread":{"SpreadDescriptor":"node.labels.x"}}]},"ForceUpdate":0},"Mode":{"Replicated":{"Replicas":2}},"UpdateConfig":{"Parallelism":1,"FailureAction":"rollback","Monitor":5000000000,"MaxFailureRatio":0,"Order":"stop-first"},"EndpointSpec":{"Mode":"vip","Ports":[{"Protocol":"tcp","TargetPort":80,"PublishedPort":8080,"PublishMode":"ingress"}]}}'),
]


def _dropped(sent, seen, where=""):
    """Paths of non-null values in ``sent`` that the canonical body lacks."""
    out = []
    if isinstance(sent, dict) and isinstance(seen, dict):
        for key, value in sent.items():
            if key not in seen:
                if value is not None:
                    out.append(f"{where}.{key}")
            else:
                out += _dropped(value, seen[key], f"{where}.{key}")
    elif isinstance(sent, list) and isinstance(seen, list):
        for i, (a, b) in enumerate(zip(sent, seen)):
            out += _dropped(a, b, f"{where}[{i}]")
    return out


@pytest.mark.parametrize("target,body", CLI_BODIES)
def test_real_cli_bodies_pass_and_lose_only_fields_api_1_41_lacks(target, body):
    t = canonical_target(target.encode())
    seen, forwarded = canonicalize_body("POST", t.plain_path, t.version, body.encode())
    assert json.loads(forwarded) == seen
    assert set(_dropped(json.loads(body), seen)) <= {
        ".NetworkingConfig.EndpointsConfig.default.GwPriority",  # API 1.48
        ".EndpointConfig.GwPriority"}
