package docker.authz
import rego.v1
allow if not startswith(input.Path, "/x")
