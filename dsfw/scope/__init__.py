"""Scoping: the objects a request names, what a policy may see of answers.

A request such as ``POST /containers/web/exec`` says nothing about whose
container ``web`` is.  This package resolves the object through dockerd
(:mod:`dsfw.scope.target`, cached by :mod:`dsfw.scope.cache` and kept honest by
dockerd's own event stream, :mod:`dsfw.scope.events`), so the policy sees its
identity as ``input.Target``, and filters answers item by item
(:mod:`dsfw.scope.filter`).  See docs/policies.md.
"""
