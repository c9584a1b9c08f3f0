# The original docker-socket-firewall's build example:
# refuse builds whose Dockerfile has a "FROM node" line.
# Still Rego v0, like the original; the FROM parsing is stricter than the
# original's `substring(line, 5, -1)`, which let "FROM node:18",
# "from node" and "FROM node AS build" through.
package docker.build

allow {
not nodeImage
}

nodeImage {
images[_] = "node"
}

## Get the image of every FROM line: no flags, registry, tag, digest or stage name ##
images[output] {
line := trim_space(input.Dockerfile[_])
upper(substring(line, 0, 5)) = "FROM "
words := [w | w := split(substring(line, 5, -1), " ")[_]; w != ""; not startswith(w, "--")]
output = repository(words[0])
}

repository(image) = name {
parts := split(split(image, "@")[0], "/")
name := split(parts[count(parts) - 1], ":")[0]
}
