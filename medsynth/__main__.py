"""``python -m medsynth`` (and ``torchrun -m medsynth``) runs the command-line interface."""

from medsynth.cli import app

if __name__ == "__main__":
    app()
