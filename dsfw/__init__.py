"""dsfw: a Docker socket firewall.

Every Docker Engine API request arriving on the protected socket is parsed once
into a canonical form, shown to a Rego policy, and -- only if the policy allows
it -- re-serialized by dsfw and relayed to the real docker socket.
"""
