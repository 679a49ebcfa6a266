"""The adapter error type, apart from build.py so method modules can raise it without importing torch."""

from loraforge.config import ConfigError


class AdapterError(ConfigError):
    """An adapter setting that cannot apply to this model or machine, with the reason."""
