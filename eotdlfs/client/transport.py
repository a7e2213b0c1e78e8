"""HTTP connections that connect within the connect timeout, then send the request under the read timeout.

urllib3 leaves the connect timeout on the socket while it sends the request, body included
(urllib3#857, requests#5263): a 10 MiB part sent to a server that stops reading for longer
than the 5 s connect timeout failed, whatever `EOTDLFS_TIMEOUT` said. These connections
connect (and shake hands, for HTTPS) first, under the connect timeout, so an unreachable
server is still found out quickly; then they send under SEND_TIMEOUT, the configured
timeout; urllib3 then waits for the answer under the call's read timeout, as before.
"""

from __future__ import annotations

from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager


class _SendsUnderSendTimeout:
    """Mixed into urllib3's connections; `send_timeout` is set on the class `_pool_classes` makes."""

    send_timeout: float

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.is_closed:  # type: ignore[attr-defined]
            self.connect()  # type: ignore[attr-defined]  # under self.timeout: the connect timeout
        self.timeout = self.send_timeout  # urllib3 puts this on the socket before sending
        super().request(*args, **kwargs)  # type: ignore[misc]


def _pool_classes(send_timeout: float) -> dict[str, type[HTTPConnectionPool]]:
    """Connection pools, by URL scheme, whose connections send under SEND_TIMEOUT."""
    settings = {"send_timeout": send_timeout}
    http = type("SendTimeoutHTTPConnection", (_SendsUnderSendTimeout, HTTPConnection), settings)
    https = type("SendTimeoutHTTPSConnection", (_SendsUnderSendTimeout, HTTPSConnection), settings)
    return {"http": type("SendTimeoutHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("SendTimeoutHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https})}


class SendTimeoutAdapter(HTTPAdapter):
    """A requests adapter whose connections send requests (bodies included) under SEND_TIMEOUT seconds,
    directly or through an HTTP(S) proxy (`HTTPS_PROXY`; SOCKS proxies keep urllib3's own connections)."""

    __attrs__ = [*HTTPAdapter.__attrs__, "send_timeout"]

    def __init__(self, send_timeout: float, **kwargs: Any):
        self.send_timeout = send_timeout  # before super().__init__, which builds the pool manager
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self.send_timeout)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _pool_classes(self.send_timeout)
        return manager
