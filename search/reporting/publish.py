"""The sweep's HTML report, written to output_dir/reports/<study>.html and logged on the parent
run; its time is printed, so what it adds to a sweep is visible."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from search.config.stores import ui_command

if TYPE_CHECKING:  # mlflow loads when the report is written
    from tracking.mlflow_tracker import SweepTracker


def publish_report(cfg: DictConfig, tracker: SweepTracker, study: str) -> Path | None:
    """Write the sweep's HTML report and log it on the parent run; None if it could not be.

    A report that fails must not fail a sweep whose trials are recorded: it says why, and
    `python -m search.report --html` can write it again.
    """
    from search.reporting.html import write
    from search.reporting.load import default_report_path, load_view
    from tracking.run_tags import ml_view_url
    from tracking.sweep_records import log_report

    link = ml_view_url("http://127.0.0.1:5000", tracker.experiment_id, tracker.parent_id)
    command = ui_command(cfg)
    how = command if command.startswith("make ui") else "the mlflow ui command at the end"
    print(f"this sweep in the MLflow UI ({how}): {link}", flush=True)
    started = time.perf_counter()
    try:
        view = load_view(tracker.tracking_uri, str(cfg.tracking.experiment_name), tracker.parent_id)
        path = default_report_path(view, str(cfg.output_dir))
        write(view, tracker.tracking_uri, path)
        # Called inside tracker.sweep_run: the parent run is open (parent_id set).
        log_report(tracker.tracking_uri, tracker.parent_id, path)  # type: ignore[arg-type]
    except Exception as err:  # noqa: BLE001 - reported, the sweep's records stay valid
        print(f"report: not written ({type(err).__name__}: {err})", flush=True)
        return None
    print(f"report: {path} ({time.perf_counter() - started:.1f}s)", flush=True)
    return path
