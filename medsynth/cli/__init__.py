"""Command-line interface: each command parses, builds a config and makes one library call."""

from medsynth.cli import attribute, demo, evaluate, generate, info, phantom, prepare, train, translate  # noqa: F401  (commands register on import)
from medsynth.cli.app import app

__all__ = ["app"]
