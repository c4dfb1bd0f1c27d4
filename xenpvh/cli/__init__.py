"""The `xenpvh` command line (entry point `xenpvh.cli:main`)."""

from xenpvh.cli.main import EXIT_BLOCKED, EXIT_BROKEN, EXIT_BUG, EXIT_FAIL, EXIT_PASS, main

__all__ = ["EXIT_BLOCKED", "EXIT_BROKEN", "EXIT_BUG", "EXIT_FAIL", "EXIT_PASS", "main"]
