# Collects the deny messages of the library policies into data.docker.authz.deny.
#
# One line per policy, with a static path on purpose: a policy that is not
# copied is simply undefined here (no message), and no other package under
# data.dsfw.library (tests included) is evaluated for a request.
package docker.authz

import rego.v1

import data.dsfw.library.common

deny contains msg if {
	common.enabled
	some msg in data.dsfw.library.images.deny
}

deny contains msg if {
	common.enabled
	some msg in data.dsfw.library.privileged.deny
}

deny contains msg if {
	common.enabled
	some msg in data.dsfw.library.mounts.deny
}

deny contains msg if {
	common.enabled
	some msg in data.dsfw.library.namespaces.deny
}

deny contains msg if {
	common.enabled
	some msg in data.dsfw.library.network.deny
}

deny contains msg if {
	common.enabled
	some msg in data.dsfw.library.callers.deny
}

deny contains msg if {
	common.enabled
	some msg in data.dsfw.library.plugins.deny
}

deny contains msg if {
	common.enabled
	some msg in data.dsfw.library.swarm.deny
}

deny contains msg if {
	common.enabled
	some msg in data.dsfw.library.users.deny
}

deny contains msg if {
	common.enabled
	some msg in data.dsfw.library.admin.deny
}

deny contains msg if {
	common.enabled
	some msg in data.dsfw.library.stored.deny
}

deny contains msg if {
	common.enabled
	some msg in data.dsfw.library.builds.deny
}
