"""Command-line override spellings that Hydra's grammar alone cannot accept together.

`conf/config.yaml` lists `sweep: null` in its defaults, so an overlay is chosen like any other
group (`sweep=transfer`). Hydra then refuses the append form, `+sweep=transfer` ("Multiple values
for sweep"), which is the form the project has always documented; both mean the same choice, so
the append form is rewritten to the plain one before Hydra parses the command line.
"""

from __future__ import annotations

from collections.abc import Sequence

# Groups listed as `GROUP: null` in conf/config.yaml's defaults, where `+GROUP=X` means `GROUP=X`.
NULL_DEFAULT_GROUPS = ("sweep",)


def normalize_overrides(overrides: Sequence[str]) -> list[str]:
    """`+sweep=NAME` as `sweep=NAME`; every other override unchanged."""
    prefixes = tuple(f"+{group}=" for group in NULL_DEFAULT_GROUPS)
    return [o[1:] if o.startswith(prefixes) else o for o in overrides]
