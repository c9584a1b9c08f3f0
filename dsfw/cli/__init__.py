"""The dsfw command: test, eval, record."""
from dsfw.cli.app import main

__all__ = ["main"]
