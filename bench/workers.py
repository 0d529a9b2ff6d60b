"""Workers: trials per hour with search.workers=2 against 1, and the coordination cost a trial.

Runs the same small sweep (random sampler, no pruning, models logged) twice in this process,
with `search.workers=1` and `=2` (CPU threads split between the workers), and takes the trial
phase's wall time from the study (first trial start to last trial end: the workers' start-up, a
TensorFlow import each, included) and the steady state's (from the moment every worker is up to
the last trial's end: trials only; a worker up earlier may have begun its first trial, a slight
edge to the 2-worker arm). It also counts, for the
2-worker run, every call into the stores the sweep process made (Optuna storage methods and
MLflow client methods: each is a round trip on a PostgreSQL / tracking-server deployment) and
the time they took, per trial; from those it works out on paper what one PostgreSQL server sees
with 64 workers.

python bench/workers.py              # 8 trials per arm
python bench/workers.py --quick      # 4 trials per arm
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter

from _common import ROOT, parse_args, print_table, verdict, write_result

SMALL = [
    "data.image_size=16",
    "train.epochs=3",
    "model.filters=8",
    "model.dense_units=16",
    "search.pruner=none",
    "search.sampler=random",
    "search.max_consecutive_failures=null",
]


class StoreCalls:
    """Counts and times the sweep process's top-level calls into its two stores."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.seconds = 0.0
        self._depth = threading.local()
        self._lock = threading.Lock()

    def wrap(self, owner: type, prefix: str, names: list[str]) -> None:
        for name in names:
            original = getattr(owner, name)

            def wrapper(*args, __original=original, __name=f"{prefix}.{name}", **kwargs):
                depth = getattr(self._depth, "n", 0)
                self._depth.n = depth + 1
                started = time.perf_counter()
                try:
                    return __original(*args, **kwargs)
                finally:
                    self._depth.n = depth
                    if depth == 0:
                        with self._lock:
                            self.calls[__name] += 1
                            self.seconds += time.perf_counter() - started

            setattr(owner, name, wrapper)


def run(workers: int, trials: int, calls: StoreCalls | None) -> dict:
    from hydra import compose, initialize_config_dir

    from search.config.study import study_name
    from search.execution import pool
    from search.sweep import prepare, sweep

    # When each worker became ready (its first send_trial waits for TensorFlow's import): the
    # steady-state figure starts once every worker is up, so it measures trials, not start-up.
    ready: dict[int, float] = {}
    send_trial = pool.Worker.send_trial

    def timed_send(self, *args, **kwargs):
        try:
            return send_trial(self, *args, **kwargs)
        finally:
            ready.setdefault(id(self), time.time())

    pool.Worker.send_trial = timed_send

    with tempfile.TemporaryDirectory(prefix=f"sweeplab-workers{workers}-") as tmp:
        overrides = [*SMALL, f"search.workers={workers}", f"search.n_trials={trials}",
                     f"output_dir={tmp}"]  # fmt: skip
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        if calls is not None:
            calls.calls.clear()
            calls.seconds = 0.0
        started = time.perf_counter()
        try:
            sweep(cfg)
        finally:
            pool.Worker.send_trial = send_trial
        whole = time.perf_counter() - started
        import optuna

        cfg = prepare(cfg)
        study = optuna.load_study(study_name=study_name(cfg), storage=cfg.search.storage)
        done = [t for t in study.trials if t.datetime_complete and t.state.name == "COMPLETE"]
        first = min(t.datetime_start for t in done)
        last = max(t.datetime_complete for t in done)
        phase = (last - first).total_seconds()
        all_up = sorted(ready.values())[workers - 1]  # the last of the first `workers` to start
        steady = last.timestamp() - all_up
    return {
        "workers": workers,
        "trials": len(done),
        "trial_phase_s": round(phase, 1),
        "whole_run_s": round(whole, 1),
        "trials_per_hour": round(3600 * len(done) / phase, 1),
        "steady_s": round(steady, 1),  # from every worker up to the last trial's end
        "steady_trials_per_hour": round(3600 * len(done) / steady, 1),
    }


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], [("--trials", {"type": int, "default": 8})])
    trials = 4 if args.quick else args.trials
    from experiments.quiet import quiet_tensorflow

    quiet_tensorflow()
    import mlflow
    from optuna.storages import BaseStorage

    from search.engines.optuna.serialized import SerializedStorage

    calls = StoreCalls()
    storage_methods = [n for n, v in vars(BaseStorage).items() if callable(v) and n[0] != "_"]
    calls.wrap(SerializedStorage, "optuna", [*storage_methods, "record_heartbeat"])
    client = mlflow.tracking.MlflowClient
    calls.wrap(
        client, "mlflow", [n for n, v in vars(client).items() if callable(v) and n[0] != "_"]
    )

    one = run(1, trials, None)
    two = run(2, trials, calls)
    speedup = two["trials_per_hour"] / one["trials_per_hour"]
    steady_speedup = two["steady_trials_per_hour"] / one["steady_trials_per_hour"]
    per_trial_calls = sum(calls.calls.values()) / two["trials"]
    per_trial_ms = 1000 * calls.seconds / two["trials"]
    trial_s = two["trial_phase_s"] * 2 / two["trials"]  # one worker's seconds a trial
    # 64 workers on one PostgreSQL server: requests a second it must answer, and the share of
    # a trial's wall time that store round trips would take if each cost what it cost here.
    at_64 = {
        "requests_per_second": round(64 * per_trial_calls / trial_s, 1),
        "store_ms_per_trial": round(per_trial_ms, 1),
        "share_of_trial_time": round(per_trial_ms / 1000 / trial_s, 4),
    }
    print_table(
        f"workers: {trials} trials, {SMALL[0]}, {SMALL[1]}",
        ["workers", "trial phase s", "trials/hour", "steady s", "steady trials/hour",
         "whole run s"],
        [[r["workers"], r["trial_phase_s"], r["trials_per_hour"], r["steady_s"],
          r["steady_trials_per_hour"], r["whole_run_s"]] for r in (one, two)],
    )  # fmt: skip
    print(
        f"2 vs 1 worker: {speedup:.2f}x trials/hour from the first trial's start (workers' "
        f"start-up included), {steady_speedup:.2f}x once every worker is up (target >= 1.8) "
        f"{verdict(speedup >= 1.8)} / {verdict(steady_speedup >= 1.8)}"
    )
    print(
        f"coordination: {per_trial_calls:.0f} store calls a trial, {per_trial_ms:.0f} ms a trial "
        f"in the sweep process; at 64 workers one PostgreSQL server answers about "
        f"{at_64['requests_per_second']} requests/s"
    )
    payload = {
        "one_worker": one,
        "two_workers": two,
        "speedup": round(speedup, 2),
        "steady_speedup": round(steady_speedup, 2),
        "store_calls_per_trial": round(per_trial_calls, 1),
        "store_ms_per_trial": round(per_trial_ms, 1),
        "store_calls_by_method": dict(calls.calls.most_common()),
        "at_64_workers": at_64,
        "settings": SMALL,
    }
    print(f"wrote {write_result('workers', payload, args.quick)}")


if __name__ == "__main__":
    main()
