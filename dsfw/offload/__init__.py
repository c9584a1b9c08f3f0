"""Large JSON bodies decided in a worker process, so the reactor keeps serving.

CPython's ``json`` and the regorus binding hold the GIL for their whole run and
a regorus engine may only be used from its own thread, so a 16 MB body held
every other client for up to a second whichever thread did the work
(docs/benchmarks.md).  Bodies of at least ``--body-worker-threshold`` bytes are
handed, as bytes, to one worker process (:mod:`dsfw.offload.worker`), which
runs the same pure functions the edge runs in process (``with_body``,
``input_document``, the embedded engine's ``evaluate`` on the same policy
revision, redaction of deny messages, label stamping) and hands back bytes:
the canonical body to forward and the decision.  :mod:`dsfw.offload.client` is
the daemon's side; :mod:`dsfw.offload.jobs` the worker's; :mod:`dsfw.offload.frames`
the framing between them.
"""
