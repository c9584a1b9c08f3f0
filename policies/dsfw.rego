# dsfw's own endpoints on the protected socket (/_dsfw/health, /_dsfw/metrics)
# are decided like any request, then answered by dsfw itself. Health is
# everyone's (a supervisor must see it); metrics show every caller's activity
# and the policy revision, so only root (input.Peer.Uid 0) may read them.
package docker.authz

import rego.v1

deny contains msg if {
	input.PathPlain == "/_dsfw/metrics"
	object.get(object.get(input, "Peer", {}), "Uid", null) != 0
	msg := "dsfw metrics are reserved to root"
}
