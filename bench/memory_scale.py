"""Peak memory of a transfer sweep against the number of images: sweep process and workers apart.

    python bench/memory_scale.py [--quick] [--sizes 1000 3000 10000] [--checkout PATH]

Issue 28 item 6: the final stage's retraining on train + validation held 7.4 GB in the sweep
process, not in a worker. This runs a real `+sweep=transfer` (224 px, MobileNet 0.25 from the
shared offline weights) on a `data=directory` folder of N photos copied from
../shared/data/cifar10-test (N / 10 a class; 1-2 KB JPEGs) to a temporary folder outside the
project (the loader follows no link that leaves its folder), with 2
trials, 2 epochs (1 head-only, 1 fine-tuning), the top-2 re-evaluation (1 seed each),
final.retrain=true and an ensemble of 2, so every training of the final stage is measured. The
sweep runs as `python -m search.run` in `--checkout` (default: this one; point it at a worktree
of another commit for a before/after), and /proc is polled every 0.2 s for the resident memory
(VmRSS; RssAnon: what is not a file mapping) of the sweep process and of each worker (its
`spawn_main` children) apart, in the search and in the final stage (from the first `final:`,
`re-evaluat` or `crowned` line). A sweep whose processes together pass `--max-mb` is killed and
reported as such (the machine is shared).

--quick: 300 images only (minutes): a smoke run, not figures. Results: bench/results/memory_scale.json.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import ROOT, SHARED_DATA, keras_home, parse_args, print_table, write_result

POLL_S = 0.2
SETTINGS = [
    "+sweep=transfer",
    "data=directory",
    "data.image_size=224",
    "search.n_trials=2",
    "search.timeout=null",
    "search.pruner=none",
    "train.epochs=2",
    "model.fine_tune.head_epochs=1",
    "final.top_k=2",
    "final.seeds=1",
    "final.contender_se=null",
    "final.retrain=true",
    "final.retrain_seeds=1",
    "final.ensemble=2",
]
FINAL_MARKS = ("final:", "re-evaluat", "crowned")  # the sweep's lines once its final stage began


def photos(folder: Path, n: int) -> Path:
    """`n` CIFAR-10 test photos, n / 10 a class, copied under `folder`."""
    source = SHARED_DATA / "cifar10-test"
    classes = sorted(p for p in source.iterdir() if p.is_dir())
    per_class = n // len(classes)
    for cls in classes:
        (folder / cls.name).mkdir(parents=True)
        for photo in sorted(cls.iterdir())[:per_class]:
            shutil.copyfile(photo, folder / cls.name / photo.name)
    return folder


def _status(pid: int) -> dict[str, float]:
    """VmRSS and RssAnon of `pid` in MiB ({} once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _is_worker(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class Poller(threading.Thread):
    """Peak memory per phase (search, final) of the sweep process and of its workers."""

    def __init__(self, pid: int, max_mb: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.max_mb = pid, max_mb
        self.phase = "search"
        self.peaks: dict[str, float] = {}
        self.workers_seen: set[int] = set()
        self.killed = False
        self.done = threading.Event()

    def _peak(self, key: str, value: float) -> None:
        self.peaks[key] = max(self.peaks.get(key, 0.0), value)

    def run(self) -> None:
        while not self.done.is_set():
            sweep = _status(self.pid)
            if not sweep:
                return
            workers = [w for w in _children(self.pid) if _is_worker(w)]
            self.workers_seen.update(workers)
            rss = [_status(w).get("VmRSS", 0.0) for w in workers]
            for phase in (self.phase, "all"):
                self._peak(f"{phase}_sweep_rss", sweep.get("VmRSS", 0.0))
                self._peak(f"{phase}_sweep_anon", sweep.get("RssAnon", 0.0))
                self._peak(f"{phase}_worker_rss", max(rss, default=0.0))
                self._peak(f"{phase}_workers_sum", sum(rss))
                self._peak(f"{phase}_total", sweep.get("VmRSS", 0.0) + sum(rss))
            if sweep.get("VmRSS", 0.0) + sum(rss) > self.max_mb:
                self.killed = True
                os.killpg(self.pid, signal.SIGKILL)
                return
            time.sleep(POLL_S)


def one_sweep(checkout: Path, n: int, tmp: Path, max_mb: float) -> dict[str, Any]:
    """Run the sweep on `n` photos; its peaks (MiB), seconds and how it ended."""
    folder = photos(tmp / f"photos-{n}", n)
    out = tmp / f"out-{n}"
    command = [
        sys.executable, "-m", "search.run", *SETTINGS, f"data.path={folder}", f"output_dir={out}"
    ]  # fmt: skip
    began = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=checkout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own group: a sweep over --max-mb is killed with its workers
    )  # fmt: skip
    poller = Poller(process.pid, max_mb)
    poller.start()
    tail: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(FINAL_MARKS) and poller.phase == "search":
            poller.phase = "final"
        tail = [*tail[-30:], line.rstrip()]
        print(f"  [{n}] {line.rstrip()}", flush=True)
    code = process.wait()
    poller.done.set()
    poller.join()
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    ended = "killed over --max-mb" if poller.killed else ("ok" if code == 0 else f"exit {code}")
    if code not in (0, None) and not poller.killed:
        print("\n".join(tail), flush=True)
    return {
        "images": n,
        "ended": ended,
        "seconds": round(time.perf_counter() - began, 1),
        "workers_started": len(poller.workers_seen),
        **{k: round(v, 1) for k, v in sorted(poller.peaks.items())},
    }


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        [
            ("--sizes", {"nargs": "+", "type": int, "default": [1000, 3000, 10000]}),
            ("--checkout", {"default": str(ROOT), "help": "the working tree whose sweep runs"}),
            ("--max-mb", {"type": float, "default": 6000.0, "help": "kill a sweep above this"}),
            ("--name", {"default": "memory_scale", "help": "bench/results/NAME.json"}),
        ],
    )
    sizes = [300] if args.quick else args.sizes
    checkout = Path(args.checkout).resolve()
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True
    ).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sweeplab-memory-scale-") as name:
        tmp = Path(name)
        keras_home(tmp)
        for n in sizes:
            rows.append(one_sweep(checkout, n, tmp, args.max_mb))
    print_table(
        f"peak resident memory (MiB) of a transfer sweep, checkout {commit[:10]}",
        ["images", "ended", "s", "sweep search", "sweep final", "sweep final anon",
         "worker search", "worker final", "total peak"],
        [
            [r["images"], r["ended"], r["seconds"], r.get("search_sweep_rss", 0.0),
             r.get("final_sweep_rss", 0.0), r.get("final_sweep_anon", 0.0),
             r.get("search_worker_rss", 0.0), r.get("final_worker_rss", 0.0),
             r.get("all_total", 0.0)]
            for r in rows
        ],
    )  # fmt: skip
    path = write_result(
        args.name,
        {
            "checkout_commit": commit,
            "settings": SETTINGS,
            "max_mb": args.max_mb,
            "rows": rows,
            "command": "python bench/memory_scale.py " + " ".join(sys.argv[1:]),
        },
        args.quick,
    )
    if any(r["ended"].startswith("exit") for r in rows):
        sys.exit(f"a sweep failed (its output is above); {path} has what was measured")


if __name__ == "__main__":
    main()
