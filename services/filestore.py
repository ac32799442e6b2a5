"""Content-addressed files: the ``files`` blob store (:mod:`services.blobs`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime


class FileBlobs:
    """Content-addressed files under ``root``."""

    def __init__(self, root: str) -> None:
        self.root = root

    def path_for(self, key: str) -> str:
        return os.path.join(self.root, key[:2], key[2:4], key)

    def put(self, key: str, data: bytes) -> None:
        final = self.path_for(key)
        if os.path.exists(final):
            os.utime(final)  # fresh again: the sweep's grace period counts from now
            return
        folder = os.path.dirname(final)
        os.makedirs(folder, exist_ok=True)
        temporary = f"{final}.{uuid.uuid4().hex[:12]}.tmp"
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, final)
        # The rename itself is durable only once the folder is.
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def get(self, key: str) -> bytes | None:
        try:
            with open(self.path_for(key), "rb") as source:
                return source.read()
        except FileNotFoundError:
            return None

    def path(self, key: str) -> str | None:
        found = self.path_for(key)
        return found if os.path.exists(found) else None

    def delete(self, key: str) -> None:
        try:
            os.unlink(self.path_for(key))
        except FileNotFoundError:
            pass

    def keys(self) -> Iterator[tuple[str, datetime]]:
        """Every file's name (temporary ones too: a killed put's) and its modification time."""
        for folder, _, names in os.walk(self.root):
            for name in names:
                try:
                    moment = os.stat(os.path.join(folder, name)).st_mtime
                except FileNotFoundError:
                    continue
                yield name, datetime.fromtimestamp(moment, UTC).replace(tzinfo=None)

    def wipe(self) -> int:
        removed = 0
        for name, _ in list(self.keys()):
            self.delete(name)
            removed += 1
        return removed
