"""bobkit: rerun, check and extend the Battle of the Backbones study."""

__version__ = "0.1.0"
