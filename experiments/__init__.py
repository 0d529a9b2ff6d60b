"""Data, models and the training of one trial. Imports neither optuna, keras_tuner nor mlflow."""
