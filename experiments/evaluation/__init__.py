"""The once-only test report of the best model and its plots."""
