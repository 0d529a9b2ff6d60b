"""`python -m search.report`: the leaderboard of a sweep, and its HTML report.

    python -m search.report                         # the latest sweep in runs/
    python -m search.report cnn-1a2b3c4d5e --top 5  # a study name (or a parent run id)
    python -m search.report --sort seconds --format csv > board.csv
    python -m search.report --html                  # also write runs/reports/<study>.html

Values come from the MLflow records of every trial of the study (all invocations) and, for an
Optuna sweep, the state and objective values stored in the study itself.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import argparse
import sys
from pathlib import Path

from experiments.errors import UserInputError
from search.reporting.leaderboard import rank, to_csv, to_json, to_table
from search.reporting.load import default_report_path, load_view, tracking_uri_of
from search.trials.records import Row

FORMATS = ("table", "csv", "json")
TABLE_TOP = 10  # rows of the terminal table unless --top says otherwise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m search.report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("sweep", nargs="?", help="study name or parent run id (default: latest)")
    parser.add_argument("--output-dir", default="runs", help="the sweep's output_dir (runs)")
    parser.add_argument("--tracking-uri", help="an MLflow store other than OUTPUT_DIR/mlflow.db")
    parser.add_argument("--experiment", default="sweeplab", help="MLflow experiment name")
    parser.add_argument(
        "--top",
        type=int,
        default=None,
        help=f"rows to show (0: all; default: {TABLE_TOP} in the table, all in csv and json)",
    )
    parser.add_argument("--sort", help="a column to sort by (a leading - reverses)")
    parser.add_argument("--format", default="table", help="table | csv | json")
    parser.add_argument(
        "--html", nargs="?", const="", default=None, help="write the HTML report (PATH optional)"
    )
    args = parser.parse_args(argv)
    from search.cli.exit_codes import exit_codes

    # The shared mapping: bad input -> 2 with its password masked, Ctrl-C -> 130.
    with exit_codes():
        _report(args)
    return 0


def _report(args: argparse.Namespace) -> None:
    """The leaderboard (and the HTML report) `args` ask for."""
    if args.format not in FORMATS:
        raise UserInputError(
            f"--format {args.format!r} is not an output format; accepted: {', '.join(FORMATS)}."
        )
    if args.top is not None and args.top < 0:
        raise UserInputError(f"--top {args.top} must be 0 (all rows) or more.")
    uri = tracking_uri_of(args.output_dir, args.tracking_uri)
    if args.tracking_uri:  # a server that is down fails in seconds, in one paragraph
        from search.config.stores import check_server

        check_server("--tracking-uri", uri)
    view = load_view(uri, args.experiment, args.sweep)
    rows = rank(view.rows, view.objectives, args.sort)
    shown = shown_rows(rows, args.top, args.format)
    if args.format == "csv":
        sys.stdout.write(to_csv(shown, view.objectives))
    elif args.format == "json":
        print(to_json(shown, view.objectives))
    else:
        print(
            f"study {view.ref.study} ({view.engine}), parent run {view.ref.run_id}: "
            f"{len(rows)} trials, top {len(shown)}"
        )
        print(to_table(shown, view.objectives), flush=True)
    if args.html is not None:
        from search.reporting.html import write

        path = Path(args.html) if args.html else default_report_path(view, args.output_dir)
        report = write(view, uri, path)
        print(f"report: {path} ({report.seconds:.1f}s)", file=sys.stderr)


def shown_rows(rows: list[Row], top: int | None, fmt: str) -> list[Row]:
    """The rows printed: csv and json (for machines) get every row unless --top is given; the
    table the top 10 (its first line says how many trials there are)."""
    if top is None:
        top = TABLE_TOP if fmt == "table" else 0
    return rows[:top] if top else rows


if __name__ == "__main__":
    sys.exit(main())
