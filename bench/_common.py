"""Shared plumbing for the benchmark scripts: paths, arguments, tables, JSON results.

Each benchmark is a script `bench/NAME.py [--quick]` that prints a table and writes
`bench/results/NAME.json` with the figures and the machine they were taken on. Scripts run with
`bench/` as `sys.path[0]`, so this module is imported as `_common`; it also puts the repository
root on the path so that the scripts import the working tree's `experiments`, `search`, `tracking`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# SWEEPLAB_BENCH_RESULTS: somewhere else for results (the smoke test writes to a temp dir).
RESULTS = Path(os.environ.get("SWEEPLAB_BENCH_RESULTS", ROOT / "bench" / "results"))
SHARED_DATA = Path(os.environ.get("SWEEPLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
WEIGHTS = "mobilenet_2_5_224_tf_no_top.h5"  # MobileNet 0.25's ImageNet weights, offline


def keras_home(tmp: Path) -> None:
    """Use $KERAS_HOME if it has the file, else a temp one with the shared offline copy."""
    current = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    if (current / "models" / WEIGHTS).is_file():
        return
    (tmp / "keras" / "models").mkdir(parents=True)
    shutil.copy(SHARED_DATA / "keras-weights" / WEIGHTS, tmp / "keras" / "models" / WEIGHTS)
    os.environ["KERAS_HOME"] = str(tmp / "keras")


def parse_args(description: str, extra: Sequence[tuple[str, dict]] = ()) -> argparse.Namespace:
    """`--quick` (a small run for `make bench QUICK=1`) plus a script's own options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a small, minutes-long run")
    for flag, options in extra:
        parser.add_argument(flag, **options)
    return parser.parse_args()


def machine() -> dict[str, Any]:
    """What the figures were taken on: CPU, load, library versions, commit."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain")),
        "taken_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    from importlib.metadata import PackageNotFoundError, version

    for name, dists in (("tensorflow", ("tensorflow-cpu", "tensorflow")), ("keras", ("keras",)),
                        ("optuna", ("optuna",)), ("mlflow", ("mlflow",)),
                        ("keras_tuner", ("keras-tuner",))):  # fmt: skip
        info[name] = None  # a missing package is reported, not fatal
        for dist in dists:
            try:
                info[name] = version(dist)
                break
            except PackageNotFoundError:
                continue
    return info


def write_result(name: str, payload: dict[str, Any], quick: bool) -> Path:
    """Write bench/results/NAME.json (`quick` is recorded inside) and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    body = {"benchmark": name, "quick": quick, "machine": machine(), **payload}
    path.write_text(json.dumps(body, indent=2, default=_jsonable) + "\n")
    print(f"\nwrote {path}")
    return path


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain fixed-width table; floats get 3 significant decimals."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(str(c)), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "MISSED")


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if value == float("inf"):
            return "never"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, timeout=5)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
