# The permissive base of the dsfw policy library: every request is allowed
# unless a library policy (or any other file) adds a deny message.
# Use it, or readonly.rego, never neither: without an allow rule dsfw denies
# everything. Active only with `library: {enabled: true}` in data.yaml at
# the top of the policy directory. See docs/library.md.
package docker.authz

import rego.v1

import data.dsfw.library.common

allow if common.enabled
