"""Each module registers its commands on bobkit.cli_app.app when imported."""

from bobkit.commands import catalog  # noqa: F401
from bobkit.commands import explain  # noqa: F401
from bobkit.commands import verify  # noqa: F401
from bobkit.commands import run  # noqa: F401
from bobkit.commands import runs  # noqa: F401
from bobkit.commands import images  # noqa: F401
from bobkit.commands import slurm  # noqa: F401
from bobkit.commands import weights  # noqa: F401
from bobkit.commands import gauntlet  # noqa: F401
