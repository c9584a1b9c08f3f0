"""Builds: the build context reader and rewriter, the build gate, the Dockerfile parser."""
