# The original docker-socket-firewall's build example:
# refuse builds whose Dockerfile has a "FROM node" line.
package docker.build

allow {
not nodeImage
}

nodeImage {
images[_] = "node"
}

## Get all FROM lines ##
images[output] {
line := input.Dockerfile[_]
startswith(line, "FROM")
output = substring(line, 5, -1)
}
