"""Errors the tool raises for bad input; the CLI prints them as one line."""


class InterrogatorError(Exception):
    """A user-facing error: the message names the thing that is wrong."""


class ConfigError(InterrogatorError):
    """A config key, value or path is wrong."""


class ModelLoadError(InterrogatorError):
    """A model folder or checkpoint cannot be loaded as the config says."""


class SubmissionError(InterrogatorError):
    """A submission file fails validation; nothing is written at the output path."""
