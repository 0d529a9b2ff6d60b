"""Clusters on an existing job system: many workers of one sweep on one shared study.

A worker is the ordinary `python -m search.run` with the study in PostgreSQL
(`search.storage`) and its runs in an MLflow tracking server (`tracking.tracking_uri`); the
study's `search.n_trials` is the total all workers share. What starts the workers is a real job
system, never one of ours: Slurm through Hydra's submitit launcher (`conf/cluster/*.yaml`,
checked by `checks.ClusterLaunchCheck`) or Ray (`python -m search.cluster.ray_workers`).
docs/clusters.md has the setup and the commands.
"""
