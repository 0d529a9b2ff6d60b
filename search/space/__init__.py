"""The backend-neutral search space: its spec (parsing), applying sampled params to the base
config, and the start points queued before the sampler draws (the base config, variants)."""
