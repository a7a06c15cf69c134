"""Where archived months live: a MinIO (S3) bucket, or a local folder when no endpoint is set.

Both backends are synchronous (the minio client is) and are driven from a worker thread. Writes
are all-or-nothing: an S3 multipart upload that fails is aborted (no object appears), and a local
file is written under a temporary name, fsynced and renamed. Object metadata (row count, sha256,
first/last timestamp, schema version) is known only after the stream ends, so it is attached
afterwards: a server-side copy onto itself for S3, a ``.meta.json`` side file locally.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.error import S3Error

from enerlink.config import Env
from enerlink.files import sync_dir

CHUNK = 1 << 20
_META_PREFIX = "x-amz-meta-"


class StorageError(RuntimeError):
    """An object store operation failed; the message names the object."""


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """``ENERLINK_MINIO_*`` and ``ENERLINK_ARCHIVE_DIR``: which backend and where."""

    endpoint: str | None
    access_key: str
    secret_key: str
    bucket: str
    secure: bool
    archive_dir: Path
    part_size: int

    @classmethod
    def from_env(cls, env: Env) -> StorageSettings:
        return cls(
            endpoint=env.optional("MINIO_ENDPOINT"),
            access_key=env.str("MINIO_ACCESS_KEY", "minioadmin"),
            secret_key=env.str("MINIO_SECRET_KEY", "minioadmin"),
            bucket=env.str("MINIO_BUCKET", "enerlink-archive"),
            secure=env.bool("MINIO_SECURE", False),
            archive_dir=env.path("ARCHIVE_DIR", "./.run/archive"),
            part_size=env.int("ARCHIVE_PART_SIZE_MB", 16) * 1024 * 1024,
        )

    @property
    def backend(self) -> str:
        return "minio" if self.endpoint else "local"


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size: int
    metadata: dict[str, str]


class ObjectStore(Protocol):
    backend: str

    def ensure(self) -> None: ...

    def location(self, key: str) -> str: ...

    def put_stream(self, key: str, data: BinaryIO, *, content_type: str) -> None: ...

    def set_metadata(self, key: str, metadata: dict[str, str], *, content_type: str) -> None: ...

    def stat(self, key: str) -> ObjectInfo | None: ...

    def iter_chunks(self, key: str, *, chunk_size: int = CHUNK) -> Iterator[bytes]: ...


class MinioStore:
    """An S3 bucket through the minio client; uploads of unknown length as multipart."""

    backend = "minio"

    def __init__(self, settings: StorageSettings) -> None:

        assert settings.endpoint is not None
        self._client = Minio(
            settings.endpoint,
            access_key=settings.access_key,
            secret_key=settings.secret_key,
            secure=settings.secure,
        )
        self._bucket = settings.bucket
        self._part_size = settings.part_size

    def ensure(self) -> None:
        try:
            if not self._client.bucket_exists(self._bucket):
                self._client.make_bucket(self._bucket)
        except Exception as exc:
            raise StorageError(f"bucket {self._bucket}: {exc}") from exc

    def location(self, key: str) -> str:
        return f"s3://{self._bucket}/{key}"

    def put_stream(self, key: str, data: BinaryIO, *, content_type: str) -> None:
        self._client.put_object(
            self._bucket, key, data, length=-1, part_size=self._part_size, content_type=content_type
        )

    def set_metadata(self, key: str, metadata: dict[str, str], *, content_type: str) -> None:

        self._client.copy_object(
            self._bucket,
            key,
            CopySource(self._bucket, key),
            metadata={**metadata, "Content-Type": content_type},
            metadata_directive=REPLACE,
        )

    def stat(self, key: str) -> ObjectInfo | None:

        try:
            info = self._client.stat_object(self._bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return None
            raise
        metadata = {
            name.lower().removeprefix(_META_PREFIX): str(value)
            for name, value in (info.metadata or {}).items()
            if name.lower().startswith(_META_PREFIX)
        }
        return ObjectInfo(size=int(info.size or 0), metadata=metadata)

    def iter_chunks(self, key: str, *, chunk_size: int = CHUNK) -> Iterator[bytes]:
        try:
            response = self._client.get_object(self._bucket, key)
        except S3Error as exc:
            raise StorageError(f"{key}: {exc.code}: {exc.message}") from exc
        try:
            yield from response.stream(chunk_size)
        finally:
            response.close()
            response.release_conn()


class LocalStore:
    """A folder: ``{archive_dir}/{key}`` plus ``{key}.meta.json``."""

    backend = "local"

    def __init__(self, settings: StorageSettings) -> None:
        self._root = settings.archive_dir

    def _path(self, key: str) -> Path:
        path = (self._root / key).resolve()
        if not path.is_relative_to(self._root.resolve()):
            raise StorageError(f"object key {key!r} escapes the archive folder")
        return path

    def ensure(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)

    def location(self, key: str) -> str:
        return str(self._path(key))

    def put_stream(self, key: str, data: BinaryIO, *, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer that crashed
            stale.unlink(missing_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as out:
                while chunk := data.read(CHUNK):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
            sync_dir(path.parent)  # the rename itself survives a power cut
        finally:
            tmp.unlink(missing_ok=True)

    def set_metadata(self, key: str, metadata: dict[str, str], *, content_type: str) -> None:
        path = self._path(key)
        meta = path.with_name(path.name + ".meta.json")
        tmp = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
        with tmp.open("w") as out:
            out.write(json.dumps({**metadata, "content-type": content_type}, sort_keys=True))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, meta)
        sync_dir(meta.parent)

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        if not path.is_file():
            return None
        meta = path.with_name(path.name + ".meta.json")
        metadata: dict[str, str] = json.loads(meta.read_text()) if meta.is_file() else {}
        metadata.pop("content-type", None)
        return ObjectInfo(size=path.stat().st_size, metadata=metadata)

    def iter_chunks(self, key: str, *, chunk_size: int = CHUNK) -> Iterator[bytes]:
        with self._path(key).open("rb") as source:
            while chunk := source.read(chunk_size):
                yield chunk


def open_store(settings: StorageSettings) -> ObjectStore:
    """The MinIO backend when ``ENERLINK_MINIO_ENDPOINT`` is set, else the local folder."""
    if settings.endpoint:
        return MinioStore(settings)
    return LocalStore(settings)
