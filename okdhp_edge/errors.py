"""Every error a user can cause, with the exit status the command line gives it.

The one CLI wrapper (:func:`okdhp_edge.utils.cli.run_cli`) prints an :class:`OkdhpError` in
one line and exits with its ``exit_code``: 2 for a request that cannot be met as asked
(command line, config, target, recipe, a report given to compare), 1 for input that is
bad or missing (data, manifests, files whose sha256 differs, a backend not installed).
Library code raises these and never re-raises one as another. Imports nothing.
"""

from __future__ import annotations


class OkdhpError(Exception):
    """Base of the errors a user causes: reported in one line, never as a traceback."""

    exit_code = 1


class UsageError(OkdhpError, ValueError):
    """Bad command-line input or request."""

    exit_code = 2


class ConfigError(UsageError):
    """A config file or override that does not fit the schema."""


class UnknownTarget(UsageError):
    """A backend or (backend, precision) the targets table does not have."""


class QuantizationError(UsageError):
    """A quantization request that cannot be met (bad recipe, too little data)."""


class DataError(OkdhpError, ValueError):
    """Bad input data (missing or unreadable image, malformed annotation file)."""


class ManifestError(DataError):
    """A record that is missing, unreadable, of a newer version, or has a missing, extra,
    mistyped or out-of-range field."""


class ReportError(ManifestError):
    """A bench or calibration report that cannot be read or compared."""

    exit_code = 2


class CheckpointError(DataError):
    """A training checkpoint that cannot be resumed from."""


class IntegrityError(OkdhpError, RuntimeError):
    """A file whose sha256 is not the one recorded for it."""


class WriteError(OkdhpError, OSError):
    """An output that cannot be written (read-only folder, disk full)."""


class TrainingInterrupted(OkdhpError, RuntimeError):
    """SIGINT/SIGTERM: a checkpoint was written and the run can be resumed."""

    exit_code = 130


class NonFiniteLossError(OkdhpError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 3


class BackendUnavailable(OkdhpError, RuntimeError):
    """A backend that cannot run here (package missing, no GPU); the reason says which."""


class MachineBusy(OkdhpError, RuntimeError):
    """``bench --busy refuse``: other processes kept the CPU busy while timing; no report
    is written from measurements made under load."""

    exit_code = 4
