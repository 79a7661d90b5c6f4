"""Where file bytes live: a content-addressed store behind a small interface.

A blob's id is the sha256 of its bytes, so the same photo sent to ten chats is stored once. The
disk store shards by the first two byte pairs (blobs/ab/cd/<sha256>) to keep directories small.
An S3-compatible store implements the same five methods.
"""

from __future__ import annotations

import abc
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


class BlobStore(abc.ABC):
    @abc.abstractmethod
    def put_file(self, path: str) -> str:
        """Store the file's bytes (the file itself may be moved); return their sha256."""

    @abc.abstractmethod
    def put_bytes(self, data: bytes) -> str: ...

    @abc.abstractmethod
    def exists(self, blob_id: str) -> bool: ...

    @abc.abstractmethod
    def size(self, blob_id: str) -> int: ...

    @abc.abstractmethod
    def read(self, blob_id: str, offset: int = 0, length: int | None = None) -> bytes: ...

    @abc.abstractmethod
    def delete(self, blob_id: str) -> None: ...

    def local_path(self, blob_id: str) -> str | None:
        """A path the HTTP server can stream with sendfile, for stores that have one."""
        return None


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class DiskBlobStore(BlobStore):
    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, blob_id: str) -> Path:
        if len(blob_id) != 64 or any(c not in "0123456789abcdef" for c in blob_id):
            raise ValueError(f"not a blob id: {blob_id!r}")
        return self.root / blob_id[:2] / blob_id[2:4] / blob_id

    def put_file(self, path: str) -> str:
        blob_id = sha256_file(path)
        dest = self._path(blob_id)
        if dest.exists():
            os.unlink(path)       # deduplicated: the bytes are already here
            return blob_id
        dest.parent.mkdir(parents=True, exist_ok=True)
        # fsync before the rename so an acknowledged upload survives a crash (G1 for files).
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
        try:
            os.replace(path, dest)
        except OSError:           # another filesystem: copy then rename within the store
            tmp = dest.with_suffix(".tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
            os.unlink(path)
        return blob_id

    def put_bytes(self, data: bytes) -> str:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".in-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return self.put_file(tmp)

    def exists(self, blob_id: str) -> bool:
        return self._path(blob_id).exists()

    def size(self, blob_id: str) -> int:
        return self._path(blob_id).stat().st_size

    def read(self, blob_id: str, offset: int = 0, length: int | None = None) -> bytes:
        with open(self._path(blob_id), "rb") as fh:
            fh.seek(offset)
            return fh.read() if length is None else fh.read(length)

    def delete(self, blob_id: str) -> None:
        try:
            self._path(blob_id).unlink()
        except FileNotFoundError:
            pass

    def local_path(self, blob_id: str) -> str | None:
        return str(self._path(blob_id))

    def __iter__(self) -> Iterator[str]:
        for p in self.root.glob("*/*/*"):
            if len(p.name) == 64:
                yield p.name
