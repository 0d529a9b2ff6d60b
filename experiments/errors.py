"""The one exception type for bad user input.

Everything that a user can get wrong (config values, search spaces, data folders, weights files)
raises `UserInputError` with a one-paragraph message that names the bad value and what would be
accepted. The command-line entry points print that message and exit non-zero without a traceback.
"""


class UserInputError(ValueError):
    """A problem the user can fix by changing a config value, a file or a folder."""


class TrialFailed(RuntimeError):
    """A trial that could not produce a result (NaN loss, a bad combination of parameters).

    The sweep records it as failed with this message as the reason and goes on.
    """


class TooManyFailures(RuntimeError):
    """`search.max_consecutive_failures` trials failed in a row: the sweep stops (exit status 3)."""


class NoModel(TooManyFailures):
    """The sweep ended without a completed trial, so with no model (exit status 3, like a
    failure streak: the input was valid, the trials failed)."""


class WorkerError(RuntimeError):
    """An exception raised while a trial trained in a worker process, carried back as its text
    ("Type: message"): the trial fails with that reason, as if it had trained in the sweep."""
