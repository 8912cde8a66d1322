"""Exceptions raised for user-facing problems.

Everything the user can cause (a bad file, a bad config value, a bad formula)
raises a subclass of :class:`ParatrainError`. The CLI prints these as one line
and exits non-zero; anything else is a bug and keeps its traceback.
"""


class ParatrainError(Exception):
    """Base class for errors caused by user input or the environment."""


class ConfigError(ParatrainError, ValueError):
    """A configuration value breaks a rule: names the field, the rule and the value."""


class DataError(ParatrainError, ValueError):
    """The data cannot be used as given: names the file, column and row where known."""


class FormulaError(ParatrainError, ValueError):
    """A formula cannot be parsed or is not allowed: names the problem and its position."""


class WorkerError(ParatrainError, RuntimeError):
    """A worker process failed: names the rank and its error."""


class DivergenceError(ParatrainError, ArithmeticError):
    """Training produced a non-finite loss or model: names the epoch and step, the likely cause
    and what to try. The last finite checkpoint is kept; no model is saved."""


class CollectiveError(ParatrainError, RuntimeError):
    """A collective (all-reduce, barrier, checkpoint exchange) could not complete: a peer died or the
    network to it is cut. Names the rank, the collective and the timeout that bounded the wait."""
