"""One rule for hiding passwords in text that leaves the process.

Storage and tracking URIs may carry a password (postgresql+psycopg://user:PASSWORD@host/db,
?password=...). Every error paragraph, printed line, MLflow tag, param and text artifact goes
through `mask` first, so the password is shown as `***` and never stored or printed.
This module imports nothing heavy: the error path of every entry point uses it.
"""

from __future__ import annotations

import re

MASK = "***"
# user:password@ in a URL's authority (the user may be empty: scheme://:password@host). A user
# name holds no [ or ] (RFC 3986 reserves them, percent-encoded in a real URL): so the usage
# pattern USER[:PASSWORD]@HOST in an error's example stays as written, not USER[:***@HOST.
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"\[\]]*:)[^\s'\"/]+(?=@)")
# password=..., pwd=... in a query string or a libpq key=value string.
_KEYWORD = re.compile(r"(?i)(?P<head>\b(?:password|passwd|pwd)\s*=\s*)[^&\s'\";,]+")


def mask(text: str) -> str:
    """`text` with every URL or key=value password replaced by `***`."""
    text = _USERINFO.sub(lambda m: m.group("head") + MASK, text)
    return _KEYWORD.sub(lambda m: m.group("head") + MASK, text)
