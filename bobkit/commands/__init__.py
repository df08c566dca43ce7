"""Each module registers its commands on bobkit.cli_app.app when imported."""

from bobkit.commands import catalog  # noqa: F401
