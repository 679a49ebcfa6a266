"""The user-error base class, below everything else so any module can raise it without import cycles."""


class ConfigError(ValueError):
    """A config problem, phrased for the user: names the file and the key."""


class AdapterError(ConfigError):
    """An adapter setting that cannot apply to this model or machine, with the reason."""
