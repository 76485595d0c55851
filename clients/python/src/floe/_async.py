"""The asyncio client: the same calls as ``Client``, awaited."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Callable, Mapping, Optional, Sequence, Union

import httpx

from . import _calls as calls
from ._calls import Call, Consistency
from ._client import _settings
from ._errors import FloeConnectionError, PayloadTooLargeError
from ._types import (
    ApiKey,
    BulkWriteResult,
    CollectionInfo,
    FlushResult,
    Id,
    ImportStatus,
    QueryResult,
    Row,
    WriteResult,
)


class AsyncClient:
    """A Floe server, for asyncio code; see ``Client``.

    ``url`` defaults to ``$FLOE_URL`` (else http://127.0.0.1:7700) and
    ``api_key`` to ``$FLOE_API_KEY``. Failed connections, 429, 502, 503
    and 504 are retried ``max_retries`` times with jittered backoff; writes
    carry a request_id, so a retried write is applied once. ``transport``
    replaces httpx's (a proxy, or a test's fault injection).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        api_key: Optional[str] = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.2,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        base, headers = _settings(url, api_key)
        self._http = httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout,
                                        transport=transport)
        self.max_retries = max_retries
        self.backoff = backoff

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def run(self, call: Call) -> Any:
        """Sends one call, retrying what is safe to retry."""
        attempt = 0
        while True:
            try:
                resp = await self._http.request(call.method, call.path, json=call.body, params=call.params,
                                              timeout=call.timeout)
            except httpx.TransportError as e:
                delay = calls.retry_after_error(call, attempt, self.max_retries, self.backoff, e)
                if delay is None:
                    raise FloeConnectionError(f"{call.method} {call.path}: {e!r}") from e
            else:
                delay = calls.retry_after_status(call, attempt, self.max_retries, self.backoff,
                                                 resp.status_code, resp.headers.get("retry-after"))
                if delay is None:
                    return calls.outcome(call, attempt, resp.status_code, resp.text,
                                         resp.headers.get("x-request-id"))
            attempt += 1
            await asyncio.sleep(delay)

    # ---- collections ----

    async def create_collection(self, name: str, dimension: int, metric: str = "cosine", *,
                          id_type: str = "u64",
                          attributes: Union[Mapping[str, str], Sequence[Any], None] = None,
                          index: Optional[Mapping[str, Any]] = None) -> "AsyncCollection":
        """Creates a collection (or finds the identical one) and returns it.
        ``attributes`` maps names to ``bool``, ``i64``, ``f64``, ``string`` or
        ``string_list``."""
        await self.run(calls.create_collection(name, dimension, metric, id_type=id_type,
                                         attributes=attributes, index=index))
        return AsyncCollection(self, name)

    def collection(self, name: str) -> "AsyncCollection":
        """A handle on an existing collection (no request is sent)."""
        return AsyncCollection(self, name)

    async def list_collections(self) -> list:
        return await self.run(calls.list_collections())

    async def describe(self, name: str) -> CollectionInfo:
        return await self.run(calls.describe(name))

    async def drop_collection(self, name: str) -> None:
        await self.run(calls.drop_collection(name))

    # ---- keys ----

    async def create_key(self, name: str, role: str, collections: Optional[Sequence[str]] = None) -> ApiKey:
        """Creates an API key; its secret is in ``.key``, shown only now."""
        return await self.run(calls.create_key(name, role, collections))

    async def list_keys(self) -> list:
        return await self.run(calls.list_keys())

    async def revoke_key(self, key_id: str) -> ApiKey:
        return await self.run(calls.revoke_key(key_id))


class AsyncCollection:
    """One collection of an AsyncClient."""

    def __init__(self, client: AsyncClient, name: str) -> None:
        self.client = client
        self.name = name

    def __repr__(self) -> str:
        return f"AsyncCollection({self.name!r})"

    async def upsert(self, ids: Any, vectors: Any, attributes: Optional[Mapping[str, Any]] = None, *,
               request_id: Optional[str] = None,
               if_versions: Optional[Sequence[Optional[int]]] = None) -> WriteResult:
        """Writes rows in one atomic request: ``vectors`` is an (n, dimension)
        array, ``attributes`` maps names to n values each. ``if_versions``:
        per row, write only if the visible row has this version (0: only if
        absent; None: no condition); else ``ConditionFailedError`` and
        nothing is written."""
        return await self.client.run(calls.upsert(self.name, ids, vectors, attributes, request_id,
                                            if_versions))

    async def patch(self, id: Id, attributes: Mapping[str, Any], *,  # noqa: A002
              if_version: Optional[int] = None, request_id: Optional[str] = None) -> WriteResult:
        """Sets these attributes of an existing row (None clears one); its
        vector and other attributes stay. ``NotFoundError`` if no row has
        the id."""
        row = {"id": id, "attributes": attributes, "if_version": if_version}
        return await self.client.run(calls.patch(self.name, [row], request_id))

    async def patch_rows(self, rows: Sequence[Mapping[str, Any]], *,
                   request_id: Optional[str] = None) -> WriteResult:
        """Patches ``[{"id", "attributes", "if_version"?}]`` in one atomic request."""
        return await self.client.run(calls.patch(self.name, rows, request_id))

    async def upsert_rows(self, rows: Sequence[Mapping[str, Any]], *,
                    request_id: Optional[str] = None) -> WriteResult:
        """Writes ``[{"id", "vector", "attributes"?}]`` in one atomic request."""
        return await self.client.run(calls.upsert_rows(self.name, rows, request_id))

    async def upsert_many(self, ids: Any, vectors: Any, attributes: Optional[Mapping[str, Any]] = None, *,
                    max_request_bytes: int = 4_000_000,
                    on_progress: Optional[Callable[[int], None]] = None) -> BulkWriteResult:
        """Writes any number of rows in requests under ``max_request_bytes``
        (API Gateway takes 6 MB). Each batch is atomic and retried safely;
        the batches together are not one transaction."""
        plan = calls.BatchPlan(ids, vectors, attributes, max_request_bytes)
        while (call := plan.next_call(self.name)) is not None:
            try:
                result = await self.client.run(call)
            except PayloadTooLargeError:
                if plan.too_large():
                    continue
                raise
            rows = plan.written(result)
            if on_progress:
                on_progress(rows)
        return BulkWriteResult(lsn=plan.lsn, rows=len(plan.ids), batches=plan.batches)

    async def delete(self, ids: Any = None, *, filter: Optional[str] = None,  # noqa: A002
               request_id: Optional[str] = None) -> WriteResult:
        """Deletes these ids, or every row the filter matches."""
        return await self.client.run(calls.delete(self.name, ids, filter, request_id))

    async def query(self, vector: Any = None, *, top_k: int = 10, filter: Optional[str] = None,  # noqa: A002
              include_attributes: Union[bool, Sequence[str]] = True, include_vector: bool = False,
              consistency: Consistency = None, cursor: Optional[Id] = None,
              nprobe: Optional[int] = None, rerank: Optional[int] = None,
              recall_target: Optional[float] = None, explain: bool = False) -> QueryResult:
        """The ``top_k`` rows closest to ``vector`` (and matching ``filter``);
        without a vector, one page of a scan in id order."""
        return await self.client.run(calls.query(
            self.name, vector, top_k=top_k, filter=filter, include_attributes=include_attributes,
            include_vector=include_vector, consistency=consistency, cursor=cursor, nprobe=nprobe,
            rerank=rerank, recall_target=recall_target, explain=explain))

    async def scan(self, filter: str, *, page_size: int = 1000,  # noqa: A002
             include_attributes: Union[bool, Sequence[str]] = True, include_vector: bool = False,
             consistency: Consistency = None) -> AsyncIterator[Row]:
        """Every row matching ``filter``, in id order, a page per request.
        Each page is read afresh: rows written meanwhile may or may not appear."""
        cursor = None
        while True:
            page = await self.query(top_k=page_size, filter=filter, include_attributes=include_attributes,
                              include_vector=include_vector, consistency=consistency, cursor=cursor)
            for row in page.rows:
                yield row
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def get(self, id: Id, *, consistency: Consistency = None) -> Optional[Row]:  # noqa: A002
        """The row with this id (vector and attributes), or None."""
        from ._errors import NotFoundError

        try:
            return await self.client.run(calls.get_row(self.name, id, consistency))
        except NotFoundError as e:
            if e.field == "id":
                return None
            raise

    async def export(self, prefix: str, *, consistency: Consistency = None,
               rows_per_file: Optional[int] = None) -> dict:
        """Writes every row of one snapshot as Parquet files under
        ``exports/<prefix>/`` in the server's object store; returns the
        report (``lsn``, ``rows``, ``files``, ``location``)."""
        return await self.client.run(calls.export(self.name, prefix, consistency=consistency,
                                            rows_per_file=rows_per_file))

    async def add_attributes(self, attributes: Union[Mapping[str, str], Sequence[Any]]) -> CollectionInfo:
        """Adds nullable attributes (``{"color": "string"}``); rows written
        before have none. Returns the configuration. Needs an admin key."""
        return await self.client.run(calls.add_attributes(self.name, attributes))

    async def start_import(self, source: str, **options: Any) -> ImportStatus:
        """Starts a bulk import of files already in the server's object store
        (``uploads/*.parquet``; options as the API names them: ``job_id``,
        ``format``, ``skip_bad_rows`` …) and returns its status at once."""
        return await self.client.run(calls.start_import(self.name, source, **options))

    async def import_status(self, job_id: str) -> ImportStatus:
        """The status of a bulk import."""
        return await self.client.run(calls.import_status(self.name, job_id))

    async def import_files(self, source: str, *, poll: float = 0.5,
                     timeout: Optional[float] = None, **options: Any) -> ImportStatus:
        """Starts a bulk import and waits for its end: the final status
        (``failed`` ones too: see ``errors`` and ``error``)."""
        status = await self.start_import(source, **options)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not status.ended:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"import {status.job_id} is still {status.state}")
            await asyncio.sleep(poll)
            status = await self.import_status(status.job_id)
        return status

    async def flush(self) -> FlushResult:
        """Writes the log tail into segments and waits."""
        return await self.client.run(calls.flush(self.name))

    async def warm(self) -> dict:
        """Loads the index's headers, keys and codes into the server's cache."""
        return await self.client.run(calls.warm(self.name))

    async def describe(self) -> CollectionInfo:
        return await self.client.describe(self.name)

    async def drop(self) -> None:
        await self.client.drop_collection(self.name)
