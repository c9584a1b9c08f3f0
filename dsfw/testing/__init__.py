"""Test support shipped with dsfw, as treq ships ``treq.testing``.

``dsfw.testing.e2e``: a real ``twistd dsfw`` in front of a real dockerd (processes,
the docker CLI, raw HTTP over AF_UNIX; needs pytest); ``dsfw.testing.opa``: a
stand-in OPA server speaking the Data and Query APIs (``python -m
dsfw.testing.opa``); ``dsfw.testing.fleet``: certificates, bundles, a bundle
server and a decision-log collector; ``dsfw.testing.secrets``: every
secret-bearing request, for redaction tests. Nothing in dsfw imports these.
"""
