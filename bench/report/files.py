"""Writing a result file whole or not at all (no TensorFlow): ``bench compare``'s, ``bench
ab``'s and ``bench bisect``'s files are written through here, so an interrupted run leaves the
old file or none, never half of a new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_json_atomic(path: str | Path, obj: object) -> None:
    """Write to a temporary file in the same directory, then rename it over ``path``."""
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    """``text`` into a temporary file in the same directory, renamed over ``path``: nothing
    half-written. Readable as the user's umask allows (``mkstemp`` makes 0600 files, which a
    later CI step running as another user, or in a container, could not read)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
