"""`bobkit` command line: see bobkit/commands/ for the commands themselves."""

from bobkit.cli_app import app, main

__all__ = ["app", "main"]
