"""`eotdlfs.repository.Publisher` over the API: a flush's files ingested by the engine as the next version."""

from __future__ import annotations

from typing import Sequence

from eotdlfs.client.api import ApiClient
from eotdlfs.client.ingest import SourceFile, run_ingest
from eotdlfs.client.ingest.ledger import DraftLedger
from eotdlfs.metadata import Metadata
from eotdlfs.repository import FileToShip, IngestResult, TransferProgress


class ApiPublisher:
    """Ingests through API, resuming the drafts LEDGER says this writer created."""

    def __init__(self, api: ApiClient, ledger: DraftLedger):
        self._api, self._ledger = api, ledger

    def ingest(self, kind: str, metadata: Metadata, files: Sequence[FileToShip], progress: TransferProgress,
               base: int) -> IngestResult:
        sources = [SourceFile(f.path, f.size, f.checksum, f.local_path) for f in files]
        return run_ingest(self._api, kind, metadata, sources, progress, self._ledger, base)
