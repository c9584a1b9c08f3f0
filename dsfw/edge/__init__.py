"""The HTTP edge: twisted.web channel and resource, relay to dockerd, hijack, listening, in-flight tracking, peer credentials."""
