"""Keras's cache folder (`$KERAS_HOME`), resolved the way Keras 3 resolves it, but at call time.

Keras reads the variable once, when it is imported (keras/src/backend/config.py): `$KERAS_HOME`
when set, else `~/.keras`, or `/tmp/.keras` when the home folder is not writable. Reading it here,
each time, lets `keras_home=DIR` (which `search.run` exports) take effect in a process that
imported Keras before, and needs neither a Keras import nor its private `keras.src` modules. The
backbones' weights (`models/`) and the keras datasets (`datasets/`) are both looked up here.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def keras_home() -> Path:
    """$KERAS_HOME (an empty value counts as unset), else ~/.keras, else /tmp/.keras."""
    configured = os.environ.get("KERAS_HOME")
    if configured:
        return Path(configured).expanduser()
    base = Path("~").expanduser()
    return (base if os.access(base, os.W_OK) else Path("/tmp")) / ".keras"


def download_dir(home: Path | None = None) -> str:
    """The cache folder (`home`, else `keras_home()`) to hand `keras.utils.get_file`, created.

    `get_file` falls back to /tmp/.keras for a folder it cannot write to, and a folder that does
    not exist yet counts as one: creating it keeps a download where the next lookup finds it.
    """
    home = home or keras_home()
    with contextlib.suppress(OSError):  # not writable: get_file uses /tmp/.keras, as Keras does
        home.mkdir(parents=True, exist_ok=True)
    return str(home)
