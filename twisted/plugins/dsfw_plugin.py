"""twistd plugin for dsfw; the real module is imported only when the plugin is used."""
from twisted.application.service import ServiceMaker

dsfw = ServiceMaker(
    "dsfw",
    "dsfw.tap",
    "Docker socket firewall: relays the Docker API through a Rego policy",
    "dsfw",
)
