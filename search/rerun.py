"""`python -m search.rerun RUN_ID`: train a logged trial again and compare its validation result.

The trial is rebuilt from what its MLflow run logged: `trial_config.yaml` (the resolved config,
sampled parameters included) holds the seed and the data settings, so the data split, weight
initialisation, shuffling and dropout masks are the same. The new run is tagged
`sweeplab.rerun_of=RUN_ID` and sits at the top level of the experiment (not under a sweep).

python -m search.rerun 3c1f...                       # store: runs/mlflow.db (output_dir=runs)
python -m search.rerun 3c1f... --output-dir /data/sweeps
python -m search.rerun 3c1f... --tracking-uri sqlite:////abs/mlflow.db --no-model
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@dataclass
class Rerun:
    """The source run and the new one, with the objective's value in each."""

    source_run_id: str
    run_id: str
    objective: str
    source_value: float | None
    value: float
    same_data: bool
    source_metrics: dict[str, float]
    metrics: dict[str, float]


def tracking_config(output_dir: str, tracking_uri: str | None, log_model: bool) -> DictConfig:
    """The `tracking` group as `python -m search.run output_dir=...` composes it."""
    from hydra import compose, initialize_config_dir

    out = str(Path(output_dir).expanduser().resolve())
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"output_dir={out}"])
    tracking = cast(
        DictConfig, OmegaConf.create(OmegaConf.to_container(cfg.tracking, resolve=True))
    )
    with open_dict(tracking):
        if tracking_uri:
            tracking.tracking_uri = tracking_uri
        tracking.log_models = log_model
    return tracking


def check_rerun_store(tracking: DictConfig) -> None:
    """The store to read the run from must exist and be healthy: a rerun creates no store."""
    from search.config.stores import check_server, check_sqlite_store, sqlite_path

    uri = str(tracking.tracking_uri)
    path = sqlite_path(uri)
    check_sqlite_store(
        "the MLflow store (--output-dir / --tracking-uri)",
        uri,
        path.parent if path else Path.cwd(),
        must_exist=True,
    )
    check_server("--tracking-uri", uri)


def rerun(
    run_id: str,
    output_dir: str = "runs",
    tracking_uri: str | None = None,
    log_model: bool = True,
    deterministic: bool = False,
) -> Rerun:
    """Train the trial of MLflow run `run_id` again in a new run; return both results."""
    tracking = tracking_config(output_dir, tracking_uri, log_model)
    check_rerun_store(tracking)  # an existing, healthy store (never create one), before TF loads
    from search.checks import check_config
    from tracking.mlflow_tracker import TAG, SweepTracker
    from tracking.sources import trial_source

    tracker = SweepTracker(tracking)
    source = trial_source(tracker, run_id)
    cfg = nested_space(cast(DictConfig, OmegaConf.create(source.config_yaml)))  # a mapping
    # The logged config passes the sweep's checks (the same function), before TensorFlow loads:
    # a run logged before a rule existed is refused in one paragraph, not as a failed rerun.
    check_config(cfg)
    from experiments.quiet import quiet_tensorflow

    quiet_tensorflow()
    from search.trials.runner import TrialRunner

    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    objective = str(cfg.train.objective)
    params = sampled_params(cfg)
    tags = {
        "study": source.tags.get(TAG + "study", ""),
        "engine": "rerun",
        "rerun_of": run_id,
        "deterministic_ops": deterministic,
    }
    runner = TrialRunner(cfg, tracker, tags)
    number = source.tags.get(TAG + "trial_number", "?")
    # The source's trial number tag ("?" when absent): the runner only names the run with it.
    outcome = runner.run(number, params)  # type: ignore[arg-type]
    new = tracker.client.get_run(outcome.run_id).data.tags
    return Rerun(
        run_id,
        outcome.run_id,
        objective,
        source.metrics.get(f"final_{objective}"),
        outcome.metrics[objective],
        new.get(TAG + "data_fingerprint") == source.tags.get(TAG + "data_fingerprint"),
        {k.removeprefix("final_"): v for k, v in source.metrics.items() if k.startswith("final_")},
        dict(outcome.metrics),
    )


def nested_space(cfg: DictConfig) -> DictConfig:
    """`cfg` with its space nested: runs logged before the space was nested hold dotted keys
    (`optimizer.learning_rate: {...}`), so that older runs re-run too."""
    space = OmegaConf.create()
    raw = cast(dict[str, Any], OmegaConf.to_container(cfg.get("space") or OmegaConf.create()))
    for key, spec in raw.items():
        OmegaConf.update(space, str(key), spec, merge=True)
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.space = space
    return cfg


def sampled_params(cfg: DictConfig) -> dict[str, Any]:
    """The params the trial sampled, read back from its resolved config: every active space
    entry by its dotted name, as the engines logged them (inactive conditional entries left out)."""
    from search.space.apply import active_values
    from search.space.spec import parse_space

    cfg = nested_space(cfg)
    return active_values(parse_space(cfg.space, cfg), cfg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m search.rerun",
        description="Train a logged trial again from its MLflow run and compare the results.",
    )
    parser.add_argument("run_id", help="the MLflow run id of a trial (a child run of a sweep)")
    parser.add_argument(
        "--output-dir",
        default="runs",
        help="the sweep's output_dir; its MLflow store is used (default: runs)",
    )
    parser.add_argument(
        "--tracking-uri", help="an MLflow tracking URI instead of the one under --output-dir"
    )
    parser.add_argument("--no-model", action="store_true", help="do not log the trained model")
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="enable TensorFlow op determinism (changes CPU numerics; see README)",
    )
    args = parser.parse_args(argv)
    from search.cli.exit_codes import exit_codes

    with exit_codes():
        result = rerun(
            args.run_id, args.output_dir, args.tracking_uri, not args.no_model, args.deterministic
        )
    print(comparison(result))
    return 0


def comparison(result: Rerun) -> str:
    """Both runs' objective, every shared final metric side by side, and whether the split held."""
    source = "unknown" if result.source_value is None else f"{result.source_value:.6f}"
    lines = [
        f"source run {result.source_run_id}: {result.objective} = {source}",
        f"rerun  run {result.run_id}: {result.objective} = {result.value:.6f}",
    ]
    lines += [
        f"  {name}: {result.source_metrics[name]:.8f} -> {value:.8f} "
        f"(difference {value - result.source_metrics[name]:+.2e})"
        for name, value in sorted(result.metrics.items())
        if name in result.source_metrics
    ]
    lines.append(f"same data split: {'yes' if result.same_data else 'NO (the data changed)'}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
