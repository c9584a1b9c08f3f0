# The build side of the library: data.docker.build decides builds with the
# Dockerfile in the input (after data.docker.authz allowed the POST /build).
# Builds are allowed unless a library policy denies them; today that is the
# images policy, on input.ExternalImages.
#
# Do not combine with another docker.build policy that relies on `allow`
# alone (such as policies/build.rego): this default makes allow true.
package docker.build

import rego.v1

default allow := true

deny contains msg if some msg in data.dsfw.library.images.build_deny
