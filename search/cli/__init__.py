"""The command line: `python -m search.run` composes the config with Hydra, normalizes
overrides, refuses added keys, and maps errors and signals to exit statuses."""
