"""One mapping from errors to exit statuses, for every `python -m search.*` entry point.

UserInputError -> 2 with one `sweeplab: error: ...` paragraph (passwords masked) on stderr and no traceback;
TooManyFailures -> 3, the same way; Ctrl-C / SIGTERM -> 130 (128 + SIGINT, as a shell reports
it), also when the interrupt surfaced as another error (a store write cut short while cleaning
up). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from experiments.errors import TooManyFailures, UserInputError
from search.trials.outcomes import was_interrupted
from tracking.secrets import mask

USER_ERROR, TOO_MANY_FAILURES, INTERRUPTED = 2, 3, 130


def fail(message: str, code: int = USER_ERROR) -> NoReturn:
    """Print a one-paragraph error and exit non-zero, without a traceback."""
    print(f"sweeplab: error: {mask(message)}", file=sys.stderr, flush=True)
    sys.exit(code)


@contextmanager
def exit_codes(on_interrupt: str | None = None) -> Iterator[None]:
    """Run the block; map what it raises to an exit status. `on_interrupt` is printed on
    stderr when an interrupt surfaced as another error (the normal Ctrl-C path prints its own)."""
    try:
        yield
    except UserInputError as err:
        fail(str(err))
    except TooManyFailures as err:
        fail(str(err), TOO_MANY_FAILURES)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    except Exception as err:
        if not was_interrupted(err):
            raise
        if on_interrupt:
            print(mask(on_interrupt), file=sys.stderr, flush=True)
        sys.exit(INTERRUPTED)
