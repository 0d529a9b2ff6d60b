"""Chaos: kill -9 a random worker or the sweep itself at random moments, resuming each time.

Starts `python -m search.run` on a small sweep, and `--kills` times, at a random moment, sends
SIGKILL either to one of its worker processes (the sweep must fail that trial with a reason and
go on) or to the sweep process (the next start must recover). The same command is started again
after each sweep kill, and once more at the end until the study is complete. Then it counts:

- completed trials lost: trials seen COMPLETE at some point that are no longer COMPLETE;
- duplicates: finished trials that trained the parameters of an earlier finished trial, other
  than the re-queue of an interrupted one (retry_of);
- runs left RUNNING: MLflow runs and Optuna trials still RUNNING after the final start;
- finished: the study's finished trials, which must equal search.n_trials.

python bench/chaos.py                # 20 trials, 10 kills
python bench/chaos.py --quick        # 8 trials, 4 kills
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, parse_args, print_table, verdict, write_result

SWEEP = [
    "data.image_size=16",
    "train.epochs=12",  # trials of ~3 s: every kill lands while the sweep still has trials to run
    "train.batch_size=64",
    "model.filters=8",
    "model.dense_units=16",
    "search.pruner=none",
    "search.sampler=random",
    "search.max_consecutive_failures=null",
    "tracking.log_models=true",
]


def workers_of(pid: int) -> list[int]:
    """The worker processes (multiprocessing spawn children, not its resource tracker) of `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and "spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def snapshot(storage: str, name: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except Exception:  # not created yet, or mid-write
        return []


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        [
            ("--trials", {"type": int, "default": 20}),
            ("--kills", {"type": int, "default": 10}),
            ("--workers", {"type": int, "default": 1}),
            ("--seed", {"type": int, "default": 0}),
        ],
    )
    trials, kills = (8, 4) if args.quick else (args.trials, args.kills)
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="sweeplab-chaos-"))
    name = "chaos"
    storage = f"sqlite:///{tmp}/optuna.db"
    command = [
        sys.executable, "-m", "search.run", *SWEEP, f"output_dir={tmp}",
        f"search.n_trials={trials}", f"search.study_name={name}",
        f"search.workers={args.workers}",
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    seen_complete: set[int] = set()
    log: list[dict] = []
    starts = 0
    orphans: list[int] = []
    started = time.perf_counter()
    proc: subprocess.Popen | None = None
    for _ in range(kills):
        just_started = proc is None or proc.poll() is not None
        if just_started:
            proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)  # fmt: skip
            starts += 1
        target = "worker" if rng.random() < 0.5 else "sweep"
        # A random moment into the trials: past a fresh start's imports and store set-up, or
        # anywhere in the trial after a worker kill (the sweep is already running).
        wait = rng.uniform(7, 15) if just_started else rng.uniform(2, 10)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        if proc.poll() is not None:
            log.append({"kill": target, "at_s": round(wait, 1), "note": "sweep had ended"})
            continue
        for t in snapshot(storage, name):
            if t.state.name == "COMPLETE":
                seen_complete.add(t.number)
        workers = workers_of(proc.pid)
        if target == "worker" and workers:
            os.kill(rng.choice(workers), signal.SIGKILL)  # the sweep goes on with a new one
        else:
            target = "sweep"
            proc.kill()
            proc.wait()
            time.sleep(3)  # a worker's watchdog notices its parent is gone within a second
            orphans += [w for w in workers if Path(f"/proc/{w}").exists()]
        log.append({"kill": target, "at_s": round(wait, 1)})
    if proc is not None and proc.poll() is None:
        proc.wait()
    final = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    starts += 1
    seconds = time.perf_counter() - started

    import mlflow

    study = snapshot(storage, name)
    complete = {t.number for t in study if t.state.name == "COMPLETE"}
    lost = sorted(seen_complete - complete)
    finished = [
        t for t in study
        if t.state.name in ("COMPLETE", "PRUNED")
        or (t.state.name == "FAIL" and "failure_reason" in t.user_attrs)
    ]  # fmt: skip
    seen_params: dict[tuple, int] = {}
    duplicates = []
    for t in sorted(finished, key=lambda t: t.number):
        key = tuple(sorted(t.params.items()))
        if key in seen_params and "retry_of" not in t.user_attrs:
            duplicates.append((t.number, seen_params[key]))
        seen_params.setdefault(key, t.number)
    client = mlflow.MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    running_runs = [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    running_trials = [t.number for t in study if t.state.name == "RUNNING"]
    worker_failures = [
        t.number for t in finished if "worker process" in t.user_attrs.get("failure_reason", "")
    ]
    landed = sum("note" not in k for k in log)
    payload = {
        "n_trials": trials,
        "kills_landed": landed,
        "kills": log,
        "starts": starts,
        "final_exit_code": final.returncode,
        "finished": len(finished),
        "completed_trials_lost": lost,
        "duplicates": duplicates,
        "runs_left_running": running_runs,
        "trials_left_running": running_trials,
        "trials_failed_by_a_worker_kill": worker_failures,
        "workers_outliving_their_sweep": orphans,
        "seconds": round(seconds, 1),
        "command": " ".join(["python bench/chaos.py", *sys.argv[1:]]),
    }
    print_table(
        f"chaos: {len(log)} kills of {trials} trials",
        ["measure", "value", "target"],
        [
            ["completed trials lost", len(lost), "0 " + verdict(not lost)],
            ["duplicates", len(duplicates), "0 " + verdict(not duplicates)],
            ["runs left RUNNING", len(running_runs) + len(running_trials),
             "0 " + verdict(not running_runs and not running_trials)],
            ["finished / n_trials", f"{len(finished)} / {trials}",
             verdict(len(finished) == trials)],
            ["kills that landed while the sweep ran", landed, f"{len(log)} " + verdict(
                landed == len(log))],
            ["trials failed by a worker kill", len(worker_failures), "-"],
            ["workers outliving a killed sweep", len(orphans), "0 " + verdict(not orphans)],
        ],
    )  # fmt: skip
    print(f"wrote {write_result('chaos', payload, args.quick)}")
    if final.returncode != 0:
        print(final.stderr[-3000:], file=sys.stderr)


if __name__ == "__main__":
    main()
