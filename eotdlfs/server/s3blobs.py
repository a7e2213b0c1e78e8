"""Blobs in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW...): `eotdlfs serve --blobs s3://BUCKET[/PREFIX]`.

The endpoint, region and keys come from the standard AWS variables (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION) through boto3.

Keys under PREFIX: `blobs/<sha1[:2]>/<sha1[2:]>` (content), `tmp/<random>` (staged, not yet
named), `uploads/<upload id>/<part>` (parts of the API's multipart uploads). A stream up to
MULTIPART_BYTES is staged in a spooled local file while its SHA-1 is computed, then put under
its SHA-1 in one request just before the rows naming it commit; a larger one goes on to tmp/
with the store's own multipart upload (an object appears only once whole), and is then copied
server-side under its SHA-1. Many small files thus cost one request each. Every replica
shares the bucket, so clean-ups only take what is older than STALE_TEMP_S: a younger object
may belong to a live request on another replica.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import tempfile
import time
from typing import Any, BinaryIO, Callable, Iterator

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from eotdlfs.parallel import in_parallel
from eotdlfs.parts import zeros_md5
from eotdlfs.server.blobs import CHUNK, STALE_TEMP_S, Concat, Hashing, check_sha1, check_upload_id

MULTIPART_BYTES = 8 * 1024 * 1024   # part size of the store's multipart uploads (10,000 parts: 78 GiB a file)
UPLOAD_THREADS = 4                  # parts in flight per stream: at most 4 x 8 MiB in memory
SPOOL_MEMORY_BYTES = 1024 * 1024   # a small staged stream past this spills to a local temp file
PRESIGN_S = 300                     # a presigned download URL is good for 5 minutes
COMMIT_THREADS = 16


class S3Staged:
    """A hashed stream, in SPOOL (small) or under tmp/ KEY (large); `S3Blobs.commit_all` names it by its SHA-1."""

    def __init__(self, store: "S3Blobs", sha1: str, size: int, spool: BinaryIO | None = None, key: str | None = None):
        self.store, self.sha1, self.size, self.spool, self.key = store, sha1, size, spool, key
        self.done = False

    def discard(self) -> None:
        if not self.done:
            if self.spool is not None:
                self.spool.close()
            if self.key is not None:
                self.store._delete([self.key])
            self.done = True


class S3Range:
    """`RangeReader` of one object: a single ranged GET read in order (reopened if a read jumps)."""

    inline = False

    def __init__(self, store: "S3Blobs", key: str, last: int):
        self.store, self.key, self.last = store, key, last
        self.body: Any = None
        self.offset = -1

    def read_at(self, offset: int, n: int) -> bytes:
        if self.body is None or offset != self.offset:
            self.close()
            self.body = self.store.client.get_object(Bucket=self.store.bucket, Key=self.key,
                                                     Range=f"bytes={offset}-{self.last}")["Body"]
            self.offset = offset
        data = self.body.read(n)
        self.offset += len(data)
        return data

    def close(self) -> None:
        if self.body is not None:
            self.body.close()
            self.body = None


class S3Blobs:
    """The `Blobs` of a bucket (see the module docstring)."""

    def __init__(self, url: str):
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError(f"--blobs {url!r} names no bucket")
        self.bucket, self.prefix = bucket, (prefix.strip("/") + "/" if prefix.strip("/") else "")
        self.client = boto3.client("s3", config=Config(max_pool_connections=64, signature_version="s3v4",
                                                       retries={"max_attempts": 5, "mode": "standard"}))
        self.transfer = TransferConfig(multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES,
                                       max_concurrency=UPLOAD_THREADS)
        self.transfer.max_in_memory_upload_chunks = UPLOAD_THREADS  # s3transfer's, not in boto3's arguments
        self.client.head_bucket(Bucket=self.bucket)  # fail at start, not at the first upload

    def _blob_key(self, sha1: str) -> str:
        check_sha1(sha1)
        return f"{self.prefix}blobs/{sha1[:2]}/{sha1[2:]}"

    def _part_prefix(self, upload_id: str) -> str:
        return f"{self.prefix}uploads/{check_upload_id(upload_id)}/"

    # -- staging and committing ---------------------------------------------

    def stage(self, source: BinaryIO, limit: int | None = None,
              check: Callable[[int], None] | None = None) -> S3Staged:
        """Hash SOURCE into a local spool; past MULTIPART_BYTES stream it on to tmp/ in parts. LIMIT and
        CHECK may abort it."""
        hashing = Hashing(source, limit, check)
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)
        try:
            while spool.tell() <= MULTIPART_BYTES:
                chunk = hashing.read(CHUNK)
                if not chunk:
                    spool.seek(0)
                    return S3Staged(self, hashing.digest.hexdigest(), hashing.size, spool=spool)
                spool.write(chunk)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        key = f"{self.prefix}tmp/{secrets.token_hex(16)}"
        try:
            self.client.upload_fileobj(_Unseekable(Concat([lambda: spool, lambda: hashing])), self.bucket, key,
                                       Config=self.transfer)
        except BaseException:
            self._delete([key])  # a failed multipart upload is aborted by boto3; a finished one is not
            raise
        finally:
            spool.close()
        return S3Staged(self, hashing.digest.hexdigest(), hashing.size, key=key)

    def sync_all(self, staged: list[S3Staged]) -> None:
        """Nothing to do: the store acknowledged each object once it was durable."""

    def commit_all(self, staged: list[S3Staged]) -> None:
        """Copy each staged object under its SHA-1 (unless those bytes are stored already) and drop it."""
        in_parallel(self._commit, staged, COMMIT_THREADS)

    def _commit(self, blob: S3Staged) -> None:
        final = self._blob_key(blob.sha1)
        if blob.spool is not None:  # small: one PUT (the same bytes again, if stored already)
            self.client.put_object(Bucket=self.bucket, Key=final, Body=blob.spool)
        elif self._head(final) is None:
            self.client.copy({"Bucket": self.bucket, "Key": blob.key}, self.bucket, final, Config=self.transfer)
        blob.discard()

    # -- reading ------------------------------------------------------------

    def reader(self, sha1: str, first: int, last: int) -> S3Range:
        return S3Range(self, self._blob_key(sha1), last)

    def presign(self, sha1: str, filename: str) -> str | None:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._blob_key(sha1)}, ExpiresIn=PRESIGN_S)

    # -- multipart uploads of the API ----------------------------------------

    def parts(self, upload_id: str) -> list[int]:
        names = (key.rsplit("/", 1)[1] for key, _ in self._list(self._part_prefix(upload_id)))
        return sorted(int(n) for n in names if n.isdigit())

    def store_part(self, upload_id: str, part: int, source: BinaryIO, expected_md5: str) -> bool:
        """Keep one part if its MD5 is EXPECTED_MD5. SOURCE is the request's spooled file: hashed
        first, then sent, so a part object only ever holds checked bytes."""
        md5 = hashlib.md5()
        while chunk := source.read(CHUNK):
            md5.update(chunk)
        if md5.hexdigest() != expected_md5:
            return False
        source.seek(0)
        self.client.upload_fileobj(source, self.bucket, self._part_prefix(upload_id) + str(part), Config=self.transfer)
        return True

    def store_zero_part(self, upload_id: str, part: int, size: int) -> None:
        """A part of SIZE zero bytes (an object has no holes: the zeros are stored)."""
        self.store_part(upload_id, part, io.BytesIO(bytes(size)), zeros_md5(size))

    def assemble(self, upload_id: str, parts: list[int]) -> S3Staged:
        prefix = self._part_prefix(upload_id)
        openers = [lambda p=p: self.client.get_object(Bucket=self.bucket, Key=prefix + str(p))["Body"] for p in parts]
        return self.stage(Concat(openers))

    def drop_upload(self, upload_id: str) -> None:
        self._delete([key for key, _ in self._list(self._part_prefix(upload_id))])

    def drop_uploads_except(self, live: set[str]) -> None:
        cutoff = time.time() - STALE_TEMP_S
        self._delete([key for key, modified in self._list(self.prefix + "uploads/")
                      if key.split("/")[-2] not in live and modified < cutoff])

    def drop_stale_temp_files(self) -> None:
        """Drop staged objects and unfinished multipart uploads older than STALE_TEMP_S (left by crashes)."""
        cutoff = time.time() - STALE_TEMP_S
        self._delete([key for key, modified in self._list(self.prefix + "tmp/") if modified < cutoff])
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                             Prefix=self.prefix + "tmp/")
        for page in pages:
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() < cutoff:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                       UploadId=upload["UploadId"])

    # -- fsck -----------------------------------------------------------------

    def blob_size(self, sha1: str) -> int | None:
        return self._head(self._blob_key(sha1))

    def blob_sha1(self, sha1: str) -> str | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._blob_key(sha1))["Body"]
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        digest = hashlib.sha1()
        with body:
            while chunk := body.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def stored(self) -> Iterator[str]:
        start = len(self.prefix + "blobs/")
        for key, _ in self._list(self.prefix + "blobs/"):
            yield key[start:].replace("/", "")

    def leftovers(self, live_uploads: set[str]) -> list[str]:
        found = [f"s3://{self.bucket}/{key}: temp object of an unfinished write"
                 for key, _ in self._list(self.prefix + "tmp/")]
        found += [f"s3://{self.bucket}/{key}: part of an upload the database does not know"
                  for key, _ in self._list(self.prefix + "uploads/") if key.split("/")[-2] not in live_uploads]
        return found

    # -- helpers --------------------------------------------------------------

    def _head(self, key: str) -> int | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except ClientError as exc:
            if _missing(exc):
                return None
            raise

    def _list(self, prefix: str) -> Iterator[tuple[str, float]]:
        """(key, last modified as a timestamp) of every object under PREFIX."""
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"], obj["LastModified"].timestamp()

    def _delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):  # DeleteObjects takes 1,000 keys a call
            self.client.delete_objects(Bucket=self.bucket,
                                       Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})


class _Unseekable:
    """Only `read`, and reads that are short only at the end: boto3 then streams the source in parts
    instead of seeking around in it, and takes a short read for the end (its parts must be 5 MiB)."""

    def __init__(self, source: Hashing):
        self.source = source

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.source.read(CHUNK), b""))
        pieces, got = [], 0
        while got < n:
            piece = self.source.read(min(CHUNK, n - got))
            if not piece:
                break
            pieces.append(piece)
            got += len(piece)
        return b"".join(pieces)


def _missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")
