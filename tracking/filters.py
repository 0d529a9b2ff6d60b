"""String literals for MLflow's search filters.

MLflow's filter grammar has no escape for a quote inside a literal ('x''y' stays two quotes), so
a study named `x'y` broke every query with "Invalid clause(s) in filter string". A literal is
quoted with whichever quote it does not contain; a value holding both kinds cannot be written
in the grammar at all, and config checks refuse such names before anything is created.
"""

from __future__ import annotations


def quoted(value: str) -> str:
    """`value` as an MLflow filter literal: 'value', or "value" when it holds an apostrophe."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(
        f"{value!r} holds both ' and \": MLflow's search filters cannot express it; use a name "
        "without quotes"
    )
