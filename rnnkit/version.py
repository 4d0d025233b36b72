"""rnnkit's version (the one place it is written besides pyproject.toml, which a test compares)."""

__version__ = "0.1.0"
