"""Errors vlprompt raises for bad input. The CLI prints them as one line, without a traceback."""


class VlpromptError(Exception):
    """Base class: a problem with the user's input, described so the user can fix it."""


class CheckpointError(VlpromptError, ValueError):
    """A checkpoint that cannot be found, read, trusted or fitted to the named architecture."""


class ModelNameError(VlpromptError, ValueError):
    """An architecture name open_clip does not know."""


class DownloadError(VlpromptError, RuntimeError):
    """Pretrained weights could not be downloaded (e.g. no network)."""


class DataError(VlpromptError, ValueError):
    """A data set that cannot be found, read or split: names the path and how to fix it."""


class MethodError(VlpromptError, ValueError):
    """A method that cannot be built or used as asked (bad setting, class list, saved prompts)."""


class RunError(VlpromptError, ValueError):
    """A run folder that cannot be used as asked (not a run, another run's config, ...)."""
