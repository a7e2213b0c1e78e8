"""eotdlfs: the EOTDL repository of datasets and models as a filesystem.

`eotdlfs.connect(api_url=..., token=...)` is the Python API (`eotdlfs.app.connection`); it is
imported on first use, so `import eotdlfs` stays light for the mount and the server.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("connect", "Connection"):
        from eotdlfs.app import connection

        return getattr(connection, name)
    raise AttributeError(f"module 'eotdlfs' has no attribute {name!r}")
