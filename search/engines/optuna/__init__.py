"""The Optuna engine: samplers and pruners, the serialized storage, threads for parallel
trials, and `OptunaEngine` itself."""
