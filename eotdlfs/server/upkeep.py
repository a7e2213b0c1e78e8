"""What a running server does now and then on its own: dropping expired multipart uploads.

Before, only a start dropped them, so a server that ran for months kept every abandoned upload's
row and parts (up to 10,000 parts of up to 1 GiB each) for good.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import anyio

from eotdlfs.server.store import Store

MAX_PERIOD_S = 3600  # an upload outlives its time to live by at most this, or half that time when shorter
_log = logging.getLogger(__name__)


def upkeep(store: Store) -> Callable[[Any], Any]:
    """The application's lifespan: while it serves, STORE's expired uploads are dropped every period."""
    period_s = min(store.limits.upload_ttl_s / 2, MAX_PERIOD_S)

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_every, period_s, store.drop_expired_uploads)
            yield
            tasks.cancel_scope.cancel()

    return lifespan


async def _every(period_s: float, call: Callable[[], None]) -> None:
    """CALL on a worker thread (it writes to the database and the blob store) every PERIOD_S; a
    failure (a database timing out, a bucket not answering) is logged and tried again next period."""
    while True:
        await anyio.sleep(period_s)
        try:
            await anyio.to_thread.run_sync(call)
        except Exception:  # noqa: BLE001 - whatever failed, the server goes on serving
            _log.exception("dropping expired uploads failed; trying again in %g s", period_s)
