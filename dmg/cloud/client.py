"""HTTP client of the cloud's REST API (``/api/v1``), used by nodes and the CLI.

Every method returns plain JSON (dicts and lists) and raises :mod:`dmg.errors`:
the cloud's JSON errors are rebuilt with :func:`dmg.errors.from_json`; a cloud
that cannot be reached raises :class:`~dmg.errors.Retryable`.

Authentication: users send the API token; nodes send the token they received at
registration. Registration itself is authenticated by the gateway's key.

HTTPS: an ``https://`` cloud's certificate is checked against ``ca`` (``DMG_CLOUD_CA``),
else the system's CA store, and against the host name. A certificate that fails the
check raises :class:`~dmg.errors.Fatal` with one line saying why (retrying cannot help).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote

from dmg.cloud.limits import MAX_CLAIM_AGAIN, MAX_FILE_RESULTS
from dmg.errors import BadInput, DmgError, Fatal, Retryable, StaleAttempt, from_json

if TYPE_CHECKING:
    import logging
    import ssl

    from dmg.cloud.plainhttp import PlainPool, PlainResponse
    from dmg.httpxlite import httpx

# httpx, ssl, logging and the node's proxy are imported where first needed: a short CLI
# command to an http:// cloud (``plain_http``) loads none of them (tests/cli/test_cli_imports.py).

API = "/api/v1"


def _json_body(value: Any) -> bytes:
    """``value`` as a request body, encoded as httpx encodes ``json=`` (compact UTF-8)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _log() -> logging.Logger:
    import logging

    return logging.getLogger(__name__)


def node_proxy() -> str:
    """The gateway's proxy as this node applied it (:func:`dmg.proxy.current`)."""
    from dmg import proxy

    return proxy.current()


def trust(ca: str = "") -> ssl.SSLContext:
    """What an HTTPS connection to the cloud trusts: the CA file ``ca``, else the system's
    CA store; host names are checked. BadInput when ``ca`` cannot be read."""
    import ssl

    try:
        return ssl.create_default_context(cafile=ca or None)
    except (OSError, ssl.SSLError) as exc:
        raise BadInput(f"DMG_CLOUD_CA={ca} cannot be read: {exc}",
                       hint="give the path of a PEM file") from None


def certificate_problem(exc: BaseException, base_url: str) -> str:
    """One line saying why the cloud's certificate was refused ("" if ``exc`` is not that)."""
    import ssl

    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, ssl.SSLCertVerificationError):
        seen = seen.__cause__ or seen.__context__
    if seen is None:
        return ""
    detail = str(seen.verify_message or seen.reason or seen)
    if seen.verify_code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
        return (f"the cloud's certificate at {base_url} is for another host name: {detail} (use in "
                "DMG_CLOUD_URL a name the certificate names)")
    return (f"the cloud's certificate at {base_url} is not signed by a CA this client trusts: {detail} "
            "(set DMG_CLOUD_CA to the CA that signed it)")


def check_cloud_certificate(base_url: str, *, ca: str = "") -> None:
    """For an ``https://`` cloud, connect once: Fatal with one line when its certificate is
    refused (see :func:`certificate_problem`); nothing when it is merely unreachable."""
    if not base_url.startswith("https:"):
        return
    with CloudClient(base_url, ca=ca, timeout=5.0) as client:
        try:
            client.request("GET", "/health")
        except Retryable:
            return


#: How long (s) the cancelled activity runs of a claim's answer stand for a fresh look.
CANCEL_NOTICE_FRESH = 1.0


class CloudClient:
    """``proxy`` returns the HTTP proxy to reach the cloud through, read before each request
    (default: the gateway's proxy as this node applied it, :func:`dmg.proxy.current`; none in
    a process that is not a node's). A proxy that cannot be reached raises Retryable saying
    "proxy" and its URL without credentials.

    ``plain_http``: the caller knows no proxy applies (``proxy`` gives "" and no proxy
    variable is set); requests to an ``http://`` cloud then go over plain keep-alive
    connections (:class:`dmg.cloud.plainhttp.PlainPool`: one per request under way) instead of
    httpx, with the same errors. The CLI uses it: its commands make a few requests each, and
    importing httpx cost more CPU than they did; so does the dispatcher: its claim's answer
    reaches it ~0.5 ms sooner, on the submit -> start path (bench/RESULTS.md, h23lat). With a
    ``proxy`` in force (asked before each request) httpx is used. Streamed answers
    (:meth:`iter_run_report`) always use httpx."""

    def __init__(self, base_url: str, *, token: str = "", timeout: float = 10.0, ca: str = "",
                 proxy: Callable[[], str] = node_proxy, plain_http: bool = False) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout
        # An http:// cloud is never reached over TLS (no redirect is followed), so no CA store
        # is loaded for it: httpx 0.29's default ``verify=True`` builds an SSL context from
        # certifi in every client, ~60 ms of CPU in each CLI command and node process.
        self._verify: ssl.SSLContext | bool = trust(ca) if self.base_url.startswith("https:") else False
        self._proxy = proxy
        self._proxy_url = ""
        self._lock = threading.Lock()
        # The gateway's cancelled activity runs as last heard (a claim's answer or a GET), and when.
        self._cancel_notice: tuple[list[str], float] | None = None
        # Built on first request: a pool process that only queues its reports (the node
        # agent sends them) never pays for an HTTP client and its loaded CA store (~3 MiB).
        self._http: httpx.Client | None = None
        self._plain: PlainPool | None = None
        self._plain_ok = plain_http and self.base_url.startswith("http://")

    def _client(self, proxy_url: str) -> httpx.Client:
        from dmg.httpxlite import httpx

        # An https:// proxy is reached over TLS even for an http:// cloud: verify it then.
        verify = True if self._verify is False and proxy_url.startswith("https:") else self._verify
        return httpx.Client(base_url=self.base_url, headers=self._headers, timeout=self._timeout,
                            verify=verify, proxy=proxy_url or None)

    def _current_http(self) -> httpx.Client:
        """The HTTP client for the proxy in force now (a new one when it changed; the old
        one is left to requests still under way and closed by the garbage collector)."""
        wanted = self._proxy()
        with self._lock:
            if self._http is None or wanted != self._proxy_url:
                self._http, self._proxy_url = self._client(wanted), wanted
            return self._http

    def _current_plain(self) -> PlainPool | None:
        """The plain connections, when they apply now (``plain_http``, an http:// cloud, no
        proxy in force); else None (httpx)."""
        if not self._plain_ok or self._proxy():
            return None
        with self._lock:
            if self._plain is None:
                from dmg.cloud.plainhttp import PlainPool

                self._plain = PlainPool(self.base_url, headers=self._headers, timeout=self._timeout)
            return self._plain

    def _unreachable(self, exc: Exception, proxy_url: str) -> Retryable:
        if proxy_url:
            from dmg.httpxlite import httpx
            from dmg.proxy import proxy_problem

            if isinstance(exc, (httpx.ProxyError, httpx.ConnectError)):
                return Retryable(f"cannot reach the cloud at {self.base_url}: {proxy_problem(proxy_url)}",
                                 hint="check the gateway's proxy (`dmg gateway proxy NAME URL`, or "
                                      "`--clear`) and that it runs")
        return Retryable(f"cannot reach the cloud at {self.base_url}",
                         hint="is `dmg cloud serve` running, and is DMG_CLOUD_URL right?")

    def close(self) -> None:
        with self._lock:
            http, self._http = self._http, None
            plain, self._plain = self._plain, None
        if http is not None:
            http.close()
        if plain is not None:
            plain.close()

    def __enter__(self) -> CloudClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ----------------------------------------------------------------------
    def request(self, method: str, path: str, *, json: Any = None,
                params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        plain = self._current_plain()
        response = (self._send_plain(plain, method, path, body=json, params=params, timeout=timeout)
                    if plain is not None else
                    self._send_httpx(method, path, body=json, params=params, timeout=timeout))
        if response.status_code == 204:
            return None
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                return None
        self._raise_for(response)

    def _send_httpx(self, method: str, path: str, *, body: Any, params: dict[str, Any] | None,
                    timeout: float | None) -> httpx.Response:
        from dmg.httpxlite import httpx

        http = self._current_http()
        try:
            return http.request(method, API + path, json=body, params=params,
                                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.TimeoutException as exc:
            raise Retryable(f"the cloud at {self.base_url} did not answer in time") from exc
        except httpx.TransportError as exc:
            problem = certificate_problem(exc, self.base_url)
            if problem:
                raise Fatal(problem) from None
            raise self._unreachable(exc, self._proxy_url) from exc

    def _send_plain(self, plain: PlainPool, method: str, path: str, *, body: Any,
                    params: dict[str, Any] | None, timeout: float | None) -> PlainResponse:
        from dmg.cloud.plainhttp import PlainTimeout, PlainUnreachable

        content = None if body is None else _json_body(body)
        try:
            return plain.request(method, API + path, params=params, body=content,
                                 content_type="application/json" if content is not None else "",
                                 timeout=timeout)
        except PlainTimeout as exc:
            raise Retryable(f"the cloud at {self.base_url} did not answer in time") from exc
        except PlainUnreachable as exc:
            raise self._unreachable(exc, "") from exc

    @staticmethod
    def _raise_for(response: httpx.Response | PlainResponse) -> NoReturn:
        """Raise the :mod:`dmg.errors` error an unsuccessful answer stands for."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "error" in body:
            raise from_json(body)
        if response.status_code >= 500:
            raise Retryable(f"the cloud answered {response.status_code}")
        if response.status_code == 422:
            raise BadInput(f"the cloud refused the request: {body}")
        raise Fatal(f"the cloud answered {response.status_code}: {response.text[:200]}")

    # -- users: gateways and nodes ------------------------------------------------------
    def create_gateway(self, name: str) -> dict[str, Any]:
        """-> ``{name, status, key1, key2, ...}``; Conflict if the name is taken."""
        return self.request("POST", "/gateways", json={"name": name})

    def list_gateways(self) -> list[dict[str, Any]]:
        return self.request("GET", "/gateways")

    def gateway(self, name: str) -> dict[str, Any]:
        """-> ``{name, status, version, nodes: [node...], created_at}``."""
        return self.request("GET", f"/gateways/{name}")

    def gateway_keys(self, name: str) -> dict[str, Any]:
        """-> ``{key1, key2}``."""
        return self.request("GET", f"/gateways/{name}/keys")

    def regenerate_key(self, name: str, which: str) -> dict[str, Any]:
        """Replace ``key1`` or ``key2``; nodes registered with the old key stay registered."""
        return self.request("POST", f"/gateways/{name}/keys/regenerate", json={"key": which})

    def set_proxy(self, name: str, url: str) -> dict[str, Any]:
        """Set gateway ``name``'s HTTP proxy ("" clears it); -> the gateway."""
        return self.request("PUT", f"/gateways/{name}/proxy", json={"url": url})

    def set_encryption(self, name: str, mode: str) -> dict[str, Any]:
        """Set gateway ``name``'s encryption mode (``tls``/``none``); Conflict while it has more
        than one node. -> the gateway."""
        return self.request("PUT", f"/gateways/{name}/encryption", json={"mode": mode})

    def list_nodes(self, gateway: str) -> list[dict[str, Any]]:
        """-> per node: name, status, reasons, version, role, running, limit, cpu_percent,
        memory_available, network_in, network_out, credential_status, last_heartbeat."""
        return self.request("GET", f"/gateways/{gateway}/nodes")

    def upgrade_node(self, gateway: str, node: str) -> dict[str, Any]:
        """Ask ``node`` to upgrade (:mod:`dmg.cloud.service.upgrades`); -> the node."""
        return self.request("POST", f"/gateways/{gateway}/nodes/{node}/upgrade")
    def node_history(self, gateway: str, node: str, *, since: float) -> dict[str, Any]:
        """The node's metrics over the last ``since`` seconds (``{samples: [...]}``)."""
        return self.request("GET", f"/gateways/{gateway}/nodes/{node}/history", params={"since": since})

    def remove_node(self, gateway: str, node: str) -> None:
        self.request("DELETE", f"/gateways/{gateway}/nodes/{node}")

    # -- users: stores, pipelines, runs -------------------------------------------------
    def add_store(self, store: dict[str, Any]) -> dict[str, Any]:
        """-> the stored definition plus ``warnings`` (a ``file`` path that some node of
        a multi-node gateway may not see)."""
        return self.request("POST", "/stores", json=store)

    def list_stores(self) -> list[dict[str, Any]]:
        return self.request("GET", "/stores")

    def create_pipeline(self, pipeline: dict[str, Any]) -> dict[str, Any]:
        """``{name, gateway, activities: [{name, source: {store, path}, sink: {store, path},
        options}]}``; BadInput for a missing field, NotFound for an unknown store/gateway.
        The answer's ``warnings`` name node-local ``file`` stores on a multi-node gateway."""
        return self.request("POST", "/pipelines", json=pipeline)

    def list_pipelines(self) -> list[dict[str, Any]]:
        return self.request("GET", "/pipelines")

    def run_pipeline(self, name: str) -> dict[str, Any]:
        """Start a run: its activity runs are Queued for the pipeline's gateway; the
        answer's ``warnings`` as for :meth:`create_pipeline`."""
        return self.request("POST", f"/pipelines/{name}/runs")

    def list_runs(self, *, limit: int = 50) -> list[dict[str, Any]]:
        return self.request("GET", "/runs", params={"limit": limit})

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        """Cancel a run that has not ended (Conflict if it has); -> the run."""
        return self.request("POST", f"/runs/{run_id}/cancel")

    def run_attempts(self, run_id: str) -> list[dict[str, Any]]:
        """Every attempt of every shard of the run (``GET /runs/{id}/attempts``)."""
        return self.request("GET", f"/runs/{quote(run_id, safe='')}/attempts")

    def shard_attempts(self, shard_id: str) -> list[dict[str, Any]]:
        """Every attempt of one shard (``GET /shards/{id}/attempts``)."""
        return self.request("GET", f"/shards/{quote(shard_id, safe='')}/attempts")

    def run(self, run_id: str) -> dict[str, Any]:
        """-> ``{id, pipeline, gateway, status, created_at, started_at, ended_at,
        activity_runs: [{id, name, status, error, files, bytes, started_at, ended_at,
        shards: [{id, index, status, node, attempt, files, bytes, started_at, ended_at,
        queued_at, error}]}]}``."""
        return self.request("GET", f"/runs/{run_id}")

    # -- nodes --------------------------------------------------------------------------
    def register_node(self, *, key: str, name: str, version: str, public_key: str = "",
                      expect_gateway_id: str = "") -> dict[str, Any]:
        """-> ``{gateway, gateway_id, node, token}``. Unauthorized for a wrong or revoked key;
        Conflict when the name is taken or the key is not ``expect_gateway_id``'s; BadInput
        when the version is too old."""
        body = {"key": key, "name": name, "version": version}
        if public_key:
            body["public_key"] = public_key
        if expect_gateway_id:
            body["expect_gateway_id"] = expect_gateway_id
        return self.request("POST", "/nodes/register", json=body)

    def heartbeat(self, beat: dict[str, Any]) -> dict[str, Any]:
        """Send a node's heartbeat; -> ``{status, reasons}`` as the cloud sees the node."""
        return self.request("POST", "/nodes/heartbeat", json=beat)

    def node_stores(self) -> list[dict[str, Any]]:
        """The stores this node's gateway uses: ``[{name, type, location, options}]``
        (the node checks it can reach each; secrets come from the site)."""
        return list(self.request("GET", "/nodes/stores")["stores"])

    # -- the dispatcher -----------------------------------------------------------------
    def claim_activity_runs(self, *, epoch: int, wait: float, limit: int = 16,
                            again: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Long-poll for up to ``wait`` s; -> activity runs claimed for this gateway:
        ``[{id, run_id, name, source: {store: {...}, path}, sink: {store: {...}, path},
        options}]`` with the full store definitions. ``again`` (after a claim that failed:
        its answer may have been lost): the ids of the activity runs the dispatcher holds;
        the others it claimed with this epoch and has not planned come again."""
        ask: dict[str, Any] = {"epoch": epoch, "wait": wait, "limit": limit}
        if again is not None:
            ask["again"] = sorted(again)[:MAX_CLAIM_AGAIN]
        body = self.request("POST", "/dispatch/claim", json=ask, timeout=wait + 10)
        notice = body.get("cancelled")  # a cloud older than this client sends none
        fresh = ([str(i) for i in notice], time.monotonic()) if isinstance(notice, list) else None
        with self._lock:
            self._cancel_notice = fresh
        return list(body["activity_runs"])

    def plan_shards(self, activity_run_id: str, *, epoch: int,
                    shards: list[dict[str, Any]]) -> None:
        """Record an activity run's shards ``[{id, index, files, bytes}]``; an empty list
        makes the activity run succeed at once. Idempotent for the same shard ids."""
        self.request("POST", f"/activity-runs/{activity_run_id}/shards",
                     json={"epoch": epoch, "shards": shards})

    def cancelled_activity_runs(self) -> list[str]:
        """The ids of the gateway's activity runs cancelled within the last hour.

        A claim's answer carries them (``cancelled``): within :data:`CANCEL_NOTICE_FRESH` s
        of the last claim's answer this returns that list without a request (the dispatcher
        looks just before each claim, and a claim long-poll answers at once when a run is
        cancelled); otherwise (no claim answered lately, or a cloud older than this client
        that sends none) it asks ``GET /dispatch/cancelled``, at most once per
        :data:`CANCEL_NOTICE_FRESH` s."""
        with self._lock:
            notice = self._cancel_notice
        if notice is not None and time.monotonic() - notice[1] < CANCEL_NOTICE_FRESH:
            return list(notice[0])
        asked = [str(i) for i in self.request("GET", "/dispatch/cancelled")["activity_runs"]]
        with self._lock:
            self._cancel_notice = (asked, time.monotonic())
        return asked

    def report_nodes_gone(self, nodes: list[str], *, epoch: int) -> None:
        """Tell the cloud these nodes' processes are gone (Offline until they beat again)."""
        self.request("POST", "/dispatch/nodes-gone", json={"epoch": epoch, "nodes": nodes})

    def fail_activity_run(self, activity_run_id: str, *, epoch: int, error: str) -> None:
        self.request("POST", f"/activity-runs/{activity_run_id}/fail",
                     json={"epoch": epoch, "error": error})

    def report_shard(self, shard_id: str, report: dict[str, Any]) -> None:
        """``{attempt, node, status: placed|running|succeeded|failed, files, bytes,
        files_total, bytes_total, started_at, ended_at, error, wait_reason}``.
        StaleAttempt when a newer attempt of the shard was reported.

        An optional ``file_results`` list (:class:`dmg.transfer.FileResult` JSON) is
        delivered first with :meth:`report_files`; both steps are idempotent, so a
        report retried after a failure (the node's outbox) is safe. File results the
        cloud refuses for good (other than StaleAttempt) are logged and dropped: the
        shard's status still goes through."""
        body = dict(report)
        file_results = body.pop("file_results", None)
        if file_results:
            try:
                self.report_files(shard_id, attempt=int(body["attempt"]), node=body.get("node"),
                                  files=list(file_results))
            except (Retryable, StaleAttempt):
                raise
            except DmgError as exc:
                _log().warning("file results dropped shard=%s files=%d error=%s",
                            shard_id, len(file_results), exc)
        self.request("POST", f"/shards/{shard_id}/report", json=body)

    def report_batch(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Send shard reports and file results in one request, oldest first: ``items`` are
        ``{shard_id, report?, files?: {attempt, node, files}}`` (at most
        :data:`dmg.cloud.limits.MAX_BATCH_ITEMS`). -> ``{applied, results, retry}``
        (:mod:`dmg.cloud.service.batches`): the first ``applied`` items were handled, the
        rest must be sent again. Raises Retryable when the cloud is away (nothing applied
        is lost: every item is idempotent)."""
        return dict(self.request("POST", "/nodes/reports", json={"items": items}))

    def report_files(self, shard_id: str, *, attempt: int, node: str | None,
                     files: list[dict[str, Any]]) -> None:
        """Record file results of attempt ``attempt`` of a shard (``[{path, source, bytes,
        checksum, status: copied|skipped|failed, verified, error, tries, started, ended}]``),
        in requests of at most :data:`MAX_FILE_RESULTS`. StaleAttempt when a newer
        attempt of the shard was reported."""
        for start in range(0, len(files), MAX_FILE_RESULTS):
            batch = files[start:start + MAX_FILE_RESULTS]
            self.request("POST", f"/shards/{shard_id}/files",
                         json={"attempt": attempt, "node": node, "files": batch})

    # -- per-file reports (users) ----------------------------------------------------------
    def iter_run_report(self, run_id: str, *, status: str | None = None) -> Iterator[bytes]:
        """The run's per-file report, one JSON Lines line (bytes, ``\n`` included) at a time,
        streamed: ``{run, activity, activity_run, shard, shard_index, path, source, bytes,
        checksum, status, verified, error, node, attempt, tries, started_at, ended_at}``.
        NotFound for an unknown run."""
        from dmg.httpxlite import httpx

        params = {"status": status} if status else None
        try:
            with self._current_http().stream("GET", f"{API}/runs/{run_id}/report", params=params) as response:
                if not response.is_success:
                    response.read()
                    self._raise_for(response)
                for line in response.iter_lines():
                    if line.strip():
                        yield line.encode() + b"\n"
        except httpx.TimeoutException as exc:
            raise Retryable(f"the cloud at {self.base_url} did not answer in time") from exc
        except httpx.TransportError as exc:
            raise self._unreachable(exc, self._proxy_url) from exc

    def run_report(self, run_id: str, *, status: str | None = None) -> list[dict[str, Any]]:
        """:meth:`iter_run_report`, parsed."""
        return [json.loads(line) for line in self.iter_run_report(run_id, status=status)]
