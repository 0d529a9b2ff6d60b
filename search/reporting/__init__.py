"""What a finished sweep tells its user: the leaderboard, the HTML report with Optuna's
figures, and advice."""
