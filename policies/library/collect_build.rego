# The build side of the library: data.docker.build decides builds with the
# Dockerfile in the input (after data.docker.authz allowed the POST /build).
# Builds are allowed unless a library policy denies them: the images policy
# (input.ExternalImages) and the builds policy (input.RunCommands).
#
# Do not combine with another docker.build policy that relies on `allow`
# alone (such as policies/build.rego): this file makes allow true.
package docker.build

import rego.v1

import data.dsfw.library.common

allow if common.enabled

deny contains msg if {
	common.enabled
	some msg in data.dsfw.library.images.build_deny
}

deny contains msg if {
	common.enabled
	some msg in data.dsfw.library.builds.build_deny
}
