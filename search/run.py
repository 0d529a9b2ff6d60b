"""`python -m search.run`: compose the config with Hydra, run a sweep, map errors to exit codes.

python -m search.run                                   # default sweep (digits, CNN, Optuna)
python -m search.run +sweep=cnn search.n_trials=5 optimizer=sgd

The command is `search.cli.command.run_command`. This module stays this short because a worker
process (spawned) imports it again as its parent's main module, before TensorFlow.
"""

if __name__ == "__main__":
    from search.cli.command import run_command

    run_command()
