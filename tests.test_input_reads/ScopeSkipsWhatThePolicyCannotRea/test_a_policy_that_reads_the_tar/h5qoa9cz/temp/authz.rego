package docker.authz
import rego.v1
allow if input.Target.Name == "web"
