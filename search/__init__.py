"""Sweeps: the command-line entry points, the search space and the two search engines."""
