"""Every exception vlprompt raises for bad input, in one module at the bottom of the layers.

The CLI prints them as one line, without a traceback. Each module imports the classes it raises
from here (they stay importable from their old modules, e.g. `vlprompt.config.RunError`);
`tests/test_errors.py` checks that no other module defines an exception class.
"""


class VlpromptError(Exception):
    """Base class: a problem with the user's input, described so the user can fix it."""


# ---- weights and backbones ----------------------------------------------------------------------
class CheckpointError(VlpromptError, ValueError):
    """A checkpoint that cannot be found, read, trusted or fitted to the named architecture."""


class ModelNameError(VlpromptError, ValueError):
    """An architecture name open_clip does not know."""


class DownloadError(VlpromptError, RuntimeError):
    """Pretrained weights could not be downloaded (e.g. no network)."""


# ---- data ---------------------------------------------------------------------------------------
class DataError(VlpromptError, ValueError):
    """A data set that cannot be found, read or split: names the path and how to fix it."""


# ---- methods ------------------------------------------------------------------------------------
class MethodError(VlpromptError, ValueError):
    """A method that cannot be built or used as asked (bad setting, class list, saved prompts)."""


class RPOError(MethodError):
    """RPO cannot be set up as asked (K < 1, a backbone without a ViT image tower, ...)."""


class PresetError(VlpromptError, ValueError):
    """A preset that does not exist, belongs to another method, or has no official values for
    the run's shots."""


# ---- runs, configs and folders ------------------------------------------------------------------
class ConfigError(VlpromptError, ValueError):
    """A configuration file or setting that cannot be read or is not valid."""


class RunError(VlpromptError, ValueError):
    """A run folder that cannot be used as asked (not a run, another run's config, ...)."""


class FolderError(RunError):
    """An output folder vlprompt may not or cannot write into (a user's folder, one in use, ...)."""


class ResultsFileError(VlpromptError, ValueError):
    """A results file (JSON lines) with a broken line that is not the last."""


class TrainingDivergedError(VlpromptError, RuntimeError):
    """The training loss or the learned parameters became NaN or infinite; the last good
    checkpoint is kept."""


class ViewPoolError(VlpromptError, ValueError):
    """A view pool that cannot be built as asked (too big, no views, ...)."""


class TrackingError(VlpromptError, ValueError):
    """Tracking asked for but not possible (the package is missing)."""


# ---- sweeps, reports and the command line -------------------------------------------------------
class BenchError(VlpromptError, ValueError):
    """A sweep that cannot be planned or run as asked (unknown protocol, no targets, ...)."""


class ExecutorError(VlpromptError, ValueError):
    """An executor that cannot be used as asked (Ray missing, bad resources, ...)."""


class ReportError(VlpromptError, ValueError):
    """A results file the report cannot read."""


class CliError(VlpromptError, ValueError):
    """A command-line usage problem (missing setting, no readable image, ...)."""


# ---- calibration and diagnosis ------------------------------------------------------------------
class CalibrationError(VlpromptError, ValueError):
    """Logits, labels, a coverage or a saved calibration record that calibration cannot use."""


class DiagnosisError(VlpromptError, ValueError):
    """Logits, labels, class names or image paths that an evaluation report cannot use."""


# ---- serving ------------------------------------------------------------------------------------
class ServeError(VlpromptError, ValueError):
    """A request the prediction server refuses (too large, not an image, too many files, ...) or
    a server that cannot start as asked; `status` is the HTTP code of the answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class ExportError(VlpromptError, ValueError):
    """A run that cannot be exported as asked (CoCoOp, a missing package, an unknown format)."""
