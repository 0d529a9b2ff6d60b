"""The one error-to-exit-code mapping of `search.run`, `search.predict` and `search.rerun`, and
the shared failure streak both engines stop on."""

from __future__ import annotations

import pytest

from experiments.errors import TooManyFailures, UserInputError
from experiments.outcome import TrialOutcome
from search.cli.exit_codes import exit_codes
from search.trials.outcomes import FailureStreak, was_interrupted


def exit_code(err: BaseException, capsys, on_interrupt: str | None = None) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stopped, exit_codes(on_interrupt):
        raise err
    return stopped.value.code, capsys.readouterr().err


def interrupted_store_write() -> OSError:
    """An error raised while a KeyboardInterrupt was being handled (a write cut short)."""
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise OSError("database is locked") from None
    except OSError as err:
        return err


def test_each_error_has_its_exit_code(capsys) -> None:
    assert exit_code(UserInputError("bad value"), capsys) == (2, "sweeplab: error: bad value\n")
    assert exit_code(TooManyFailures("3 in a row"), capsys) == (3, "sweeplab: error: 3 in a row\n")
    assert exit_code(KeyboardInterrupt(), capsys) == (130, "")
    err = interrupted_store_write()
    assert was_interrupted(err) and not was_interrupted(OSError("locked"))
    assert exit_code(err, capsys, "resume with: x") == (130, "resume with: x\n")
    with pytest.raises(OSError), exit_codes():  # a bug keeps its traceback
        raise OSError("locked")


def test_failure_streak_is_the_same_rule_for_every_engine() -> None:
    streak = FailureStreak(2)
    streak.record(TrialOutcome.FAILED, "ValueError: one")
    streak.record(TrialOutcome.INTERRUPTED)  # neither adds nor ends the streak
    assert streak.stop_reason is None
    streak.record(TrialOutcome.PRUNED)  # a result: ends it
    streak.record(TrialOutcome.FAILED, "ValueError: two")
    streak.record(TrialOutcome.FAILED, "ValueError: three\nmore")
    with pytest.raises(TooManyFailures, match=r"^2 trials failed in a row .*ValueError: three\. "):
        streak.raise_if_exceeded()
    never = FailureStreak(None)  # search.max_consecutive_failures=null
    for _ in range(50):
        never.record(TrialOutcome.FAILED, "ValueError")
    never.raise_if_exceeded()
    assert [o for o in TrialOutcome if o.counts_as_finished] == [
        TrialOutcome.COMPLETE,
        TrialOutcome.PRUNED,
        TrialOutcome.FAILED,
    ]


def test_after_a_stop_signal_any_error_takes_the_ctrl_c_path() -> None:
    """A SIGTERM or SIGUSR2 that lands inside a store call can come out as another error with no
    trace of the interrupt; once a stop was asked, the runner takes it for the interrupt (trial
    redone, exit 130), never for the trial's own failure or a config error."""
    import contextlib
    import signal

    from search.execution.resume import sigterm_as_interrupt
    from search.trials.outcomes import was_interrupted

    broken = ConnectionError("server closed the connection unexpectedly")
    assert not was_interrupted(broken)
    with sigterm_as_interrupt():
        with contextlib.suppress(KeyboardInterrupt):  # the handler's own raise
            signal.raise_signal(signal.SIGTERM)
        assert was_interrupted(broken)
    assert not was_interrupted(broken)  # the guarded block is over
