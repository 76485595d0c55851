"""Every API call as data: method, path, body and how to read the answer.
The sync and async clients only send these, so each rule lives once."""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union
from urllib.parse import quote

import httpx
import numpy as np

from ._errors import error_from_response
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
from ._vectors import as_matrix, encode_matrix, encode_vector

Consistency = Union[str, int, WriteResult, BulkWriteResult, None]
"""``"strong"`` (default), ``"eventual"``, or a write's lsn or result (read
at least that write)."""

RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class Call:
    """One HTTP request and how to read its answer.

    ``retry_safe``: sending it twice does no harm (reads, and writes that
    carry a request_id the server deduplicates). ``gone_ok``: a 404 on a
    retry means the first attempt did it (drop).
    """

    method: str
    path: str
    parse: Callable[[Any], Any]
    body: Any = None
    params: Optional[Dict[str, str]] = None
    retry_safe: bool = True
    gone_ok: bool = False
    # The client's timeout unless set; None waits as long as it takes.
    timeout: Any = httpx.USE_CLIENT_DEFAULT


def retry_after_error(call: Call, attempt: int, max_retries: int, base: float,
                      error: Exception) -> Optional[float]:
    """Seconds to wait before sending ``call`` again after ``error`` (no
    answer came), or None to give up."""
    nothing_sent = isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout))
    if attempt < max_retries and (call.retry_safe or nothing_sent):
        return backoff(attempt + 1, base, None)
    return None


def retry_after_status(call: Call, attempt: int, max_retries: int, base: float, status: int,
                       retry_after: Optional[str]) -> Optional[float]:
    """Seconds to wait before sending ``call`` again after an answer with
    ``status``, or None to take the answer."""
    if status in RETRY_STATUSES and call.retry_safe and attempt < max_retries:
        return backoff(attempt + 1, base, retry_after)
    return None


def outcome(call: Call, attempt: int, status: int, text: str, request_id: Optional[str]) -> Any:
    """What an answer means: the parsed result, or the error it raises."""
    if status < 400:
        return call.parse(json.loads(text) if text else None)
    if status == 404 and call.gone_ok and attempt > 0:
        return call.parse(None)
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = text
    raise error_from_response(status, body, request_id)


def backoff(attempt: int, base: float, retry_after: Optional[str]) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): the server's
    Retry-After when it sent one, else exponential with full jitter."""
    if retry_after:
        try:
            return min(float(retry_after), 30.0)
        except ValueError:
            pass
    return random.uniform(0, base * (2 ** (attempt - 1)))


def _collection(name: str) -> str:
    return f"/v1/collections/{quote(name, safe='')}"


def _consistency(value: Consistency) -> Any:
    if value is None or value == "strong":
        return "strong"
    if value == "eventual":
        return "eventual"
    if isinstance(value, (WriteResult, BulkWriteResult)):
        return {"at_least_lsn": value.lsn}
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return {"at_least_lsn": int(value)}
    raise ValueError(
        f"consistency must be 'strong', 'eventual', an lsn or a WriteResult, got {value!r}"
    )


def _id_list(ids: Any) -> List[Id]:
    if isinstance(ids, np.ndarray):
        return ids.tolist()
    if isinstance(ids, (str, bytes, int)):
        raise ValueError("ids must be a sequence of ids")
    return [i.item() if isinstance(i, np.generic) else i for i in ids]


def _json_value(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def _attribute_columns(attributes: Optional[Mapping[str, Any]], n: int) -> Dict[str, list]:
    out: Dict[str, list] = {}
    for name, values in (attributes or {}).items():
        column = values.tolist() if isinstance(values, np.ndarray) else [_json_value(v) for v in values]
        if len(column) != n:
            raise ValueError(f"attribute {name!r} has {len(column)} values for {n} ids")
        out[name] = column
    return out


def new_request_id() -> str:
    return uuid.uuid4().hex


def _write(parse_request_id: str) -> Callable[[Any], WriteResult]:
    def parse(body: Any) -> WriteResult:
        return WriteResult(
            lsn=body["lsn"], rows=body["rows"], duplicate=body["duplicate"],
            request_id=parse_request_id,
        )

    return parse


# ---- collections ------------------------------------------------------------


def create_collection(
    name: str,
    dimension: int,
    metric: str = "cosine",
    *,
    id_type: str = "u64",
    attributes: Union[Mapping[str, str], Sequence[Any], None] = None,
    index: Optional[Mapping[str, Any]] = None,
) -> Call:
    body: Dict[str, Any] = {"dimension": dimension, "metric": metric, "id_type": id_type,
                            "attributes": _attribute_list(attributes)}
    if index:
        body["index"] = dict(index)
    # An identical collection answers 200, so a retry is safe.
    return Call("PUT", _collection(name), CollectionInfo.from_json, body=body)


def _attribute_list(attributes: Union[Mapping[str, str], Sequence[Any], None]) -> List[Any]:
    if isinstance(attributes, Mapping):
        return [{"name": k, "type": v} for k, v in attributes.items()]
    return [
        a if isinstance(a, Mapping) else {"name": a.name, "type": a.type}
        for a in (attributes or [])
    ]


def add_attributes(name: str, attributes: Union[Mapping[str, str], Sequence[Any]]) -> Call:
    # Adding what exists with the same type does nothing: safe to repeat.
    return Call("POST", f"{_collection(name)}/attributes", CollectionInfo.from_json,
                body={"attributes": _attribute_list(attributes)})


def start_import(name: str, source: str, *, job_id: Optional[str] = None,
                 format: Optional[str] = None, id_column: Optional[str] = None,
                 vector_column: Optional[str] = None, ids: Optional[str] = None,
                 id_offset: Optional[int] = None, skip_bad_rows: bool = False,
                 ignore_unknown_columns: bool = False) -> Call:
    body: Dict[str, Any] = {"source": source, "skip_bad_rows": skip_bad_rows,
                            "ignore_unknown_columns": ignore_unknown_columns,
                            # Minted here: a retried request is the same job.
                            "job_id": job_id or uuid.uuid4().hex}
    for key, value in (("format", format), ("id_column", id_column),
                       ("vector_column", vector_column), ("ids", ids), ("id_offset", id_offset)):
        if value is not None:
            body[key] = value
    return Call("POST", f"{_collection(name)}/imports", ImportStatus.from_json, body=body)


def import_status(name: str, job_id: str) -> Call:
    return Call("GET", f"{_collection(name)}/imports/{quote(job_id, safe='')}",
                ImportStatus.from_json)


def list_collections() -> Call:
    return Call("GET", "/v1/collections", lambda b: list(b["collections"]))


def describe(name: str) -> Call:
    return Call("GET", _collection(name), CollectionInfo.from_json)


def drop_collection(name: str) -> Call:
    return Call("DELETE", _collection(name), lambda b: None, gone_ok=True)


# ---- writes -----------------------------------------------------------------


def upsert(
    name: str,
    ids: Any,
    vectors: Any,
    attributes: Optional[Mapping[str, Any]] = None,
    request_id: Optional[str] = None,
    if_versions: Optional[Sequence[Optional[int]]] = None,
) -> Call:
    """A columnar upsert, vectors packed as one base64 string."""
    ids = _id_list(ids)
    matrix = as_matrix(vectors)
    if matrix.shape[0] != len(ids):
        raise ValueError(f"{matrix.shape[0]} vectors for {len(ids)} ids")
    request_id = request_id or new_request_id()
    columns: Dict[str, Any] = {"ids": ids, "vectors": encode_matrix(matrix)}
    attrs = _attribute_columns(attributes, len(ids))
    if attrs:
        columns["attributes"] = attrs
    if if_versions is not None:
        versions = [None if v is None else int(v) for v in if_versions]
        if len(versions) != len(ids):
            raise ValueError(f"{len(versions)} if_versions for {len(ids)} ids")
        columns["if_versions"] = versions
    body = {"columns": columns, "request_id": request_id}
    return Call("POST", f"{_collection(name)}/upsert", _write(request_id), body=body)


def upsert_rows(name: str, rows: Sequence[Mapping[str, Any]], request_id: Optional[str] = None) -> Call:
    """A row-wise upsert: ``[{"id", "vector", "attributes"?}]``."""
    request_id = request_id or new_request_id()
    out = []
    for r in rows:
        row: Dict[str, Any] = {"id": _json_value(r["id"]), "vector": encode_vector(r["vector"])}
        if r.get("attributes"):
            row["attributes"] = {k: _json_value(v) for k, v in r["attributes"].items()}
        if r.get("if_version") is not None:
            row["if_version"] = int(r["if_version"])
        out.append(row)
    body = {"rows": out, "request_id": request_id}
    return Call("POST", f"{_collection(name)}/upsert", _write(request_id), body=body)


def patch(name: str, rows: Sequence[Mapping[str, Any]], request_id: Optional[str] = None) -> Call:
    """Sets attributes of existing rows: ``[{"id", "attributes", "if_version"?}]``."""
    request_id = request_id or new_request_id()
    out = []
    for r in rows:
        row: Dict[str, Any] = {
            "id": _json_value(r["id"]),
            "attributes": {k: _json_value(v) for k, v in r["attributes"].items()},
        }
        if r.get("if_version") is not None:
            row["if_version"] = int(r["if_version"])
        out.append(row)
    body = {"rows": out, "request_id": request_id}
    return Call("POST", f"{_collection(name)}/patch", _write(request_id), body=body)


def delete(
    name: str,
    ids: Any = None,
    filter: Optional[str] = None,  # noqa: A002 - the API's name
    request_id: Optional[str] = None,
) -> Call:
    if (ids is None) == (filter is None):
        raise ValueError("pass exactly one of ids and filter")
    request_id = request_id or new_request_id()
    body: Dict[str, Any] = {"request_id": request_id}
    if ids is not None:
        body["ids"] = _id_list(ids)
    else:
        body["filter"] = filter
    return Call("POST", f"{_collection(name)}/delete", _write(request_id), body=body)


# ---- reads ------------------------------------------------------------------


def query(
    name: str,
    vector: Any = None,
    *,
    top_k: int = 10,
    filter: Optional[str] = None,  # noqa: A002 - the API's name
    include_attributes: Union[bool, Sequence[str]] = True,
    include_vector: bool = False,
    consistency: Consistency = None,
    cursor: Optional[Id] = None,
    nprobe: Optional[int] = None,
    rerank: Optional[int] = None,
    recall_target: Optional[float] = None,
    explain: bool = False,
) -> Call:
    body: Dict[str, Any] = {"top_k": top_k, "consistency": _consistency(consistency)}
    if vector is not None:
        body["vector"] = encode_vector(vector)
    if filter is not None:
        body["filter"] = filter
    if include_attributes is not True:
        body["include_attributes"] = (
            include_attributes if isinstance(include_attributes, bool) else list(include_attributes)
        )
    if include_vector:
        body["include_vector"] = True
        body["vector_encoding"] = "base64"
    for key, value in (("cursor", cursor), ("nprobe", nprobe), ("rerank", rerank),
                       ("recall_target", recall_target)):
        if value is not None:
            body[key] = _json_value(value)
    if explain:
        body["explain"] = True
    return Call("POST", f"{_collection(name)}/query", QueryResult.from_json, body=body)


def get_row(name: str, id: Id, consistency: Consistency = None) -> Call:  # noqa: A002
    params = {"vector_encoding": "base64"}
    c = _consistency(consistency)
    if isinstance(c, dict):
        params["at_least_lsn"] = str(c["at_least_lsn"])
    else:
        params["consistency"] = c
    path = f"{_collection(name)}/rows/{quote(str(_json_value(id)), safe='')}"
    return Call("GET", path, Row.from_json, params=params)


def export(name: str, prefix: str, *, consistency: Consistency = None,
           rows_per_file: Optional[int] = None) -> Call:
    body: Dict[str, Any] = {"prefix": prefix, "consistency": _consistency(consistency)}
    if rows_per_file is not None:
        body["rows_per_file"] = int(rows_per_file)
    # Not repeated once sent (a second export would find the prefix taken),
    # and waited for however long it takes: the server answers when done.
    return Call("POST", f"{_collection(name)}/export", lambda b: b, body=body, retry_safe=False,
                timeout=None)


def flush(name: str) -> Call:
    return Call("POST", f"{_collection(name)}/flush", lambda b: FlushResult(**b))


def warm(name: str) -> Call:
    return Call("POST", f"{_collection(name)}/warm", lambda b: b)


# ---- keys -------------------------------------------------------------------


def create_key(name: str, role: str, collections: Optional[Sequence[str]] = None) -> Call:
    body: Dict[str, Any] = {"name": name, "role": role}
    if collections is not None:
        body["collections"] = list(collections)
    # Not idempotent: a retry after a lost answer would make a second key.
    return Call("POST", "/v1/keys", ApiKey.from_json, body=body, retry_safe=False)


def list_keys() -> Call:
    return Call("GET", "/v1/keys", lambda b: [ApiKey.from_json(k) for k in b["keys"]])


def revoke_key(key_id: str) -> Call:
    return Call("DELETE", f"/v1/keys/{quote(key_id, safe='')}", ApiKey.from_json)


# ---- batching ---------------------------------------------------------------


def rows_per_batch(
    matrix: np.ndarray, ids: List[Id], attrs: Dict[str, list], max_request_bytes: int
) -> int:
    """How many rows fit a request of ``max_request_bytes``, estimated from
    the packed vector size and a sample of ids and attributes."""
    n = len(ids)
    if n == 0:
        return 1
    sample = slice(0, min(n, 64))
    k = len(ids[sample])
    side = len(json.dumps(ids[sample])) + sum(len(json.dumps(v[sample])) for v in attrs.values())
    per_row = matrix.shape[1] * 4 * 4 / 3 + side / k + 8
    return max(1, int(max_request_bytes * 0.9 / per_row))


class BatchPlan:
    """Splits a bulk upsert into requests under a size budget, each with its
    own request_id (so a retried batch is written once), halving a batch the
    server finds too large (a 413 writes nothing)."""

    def __init__(self, ids: Any, vectors: Any, attributes: Optional[Mapping[str, Any]],
                 max_request_bytes: int) -> None:
        self.ids = _id_list(ids)
        self.matrix = as_matrix(vectors)
        if self.matrix.shape[0] != len(self.ids):
            raise ValueError(f"{self.matrix.shape[0]} vectors for {len(self.ids)} ids")
        self.attrs = _attribute_columns(attributes, len(self.ids))
        self.per = rows_per_batch(self.matrix, self.ids, self.attrs, max_request_bytes)
        self.prefix = new_request_id()
        self.start = 0
        self.batches = 0
        self.lsn = 0

    def next_call(self, name: str) -> Optional[Call]:
        """The next batch's upsert, or None when all rows are written."""
        if self.start >= len(self.ids):
            return None
        end = min(self.start + self.per, len(self.ids))
        self._end = end
        attrs = {k: v[self.start:end] for k, v in self.attrs.items()}
        return upsert(name, self.ids[self.start:end], self.matrix[self.start:end], attrs,
                      request_id=f"{self.prefix}-{self.start}-{end}")

    def written(self, result: WriteResult) -> int:
        """Records an acknowledged batch; returns how many rows it held."""
        rows = self._end - self.start
        self.start = self._end
        self.batches += 1
        self.lsn = result.lsn
        return rows

    def too_large(self) -> bool:
        """Halves the batch size after a 413; False if one row is too large."""
        rows = self._end - self.start
        if rows <= 1:
            return False
        self.per = max(1, rows // 2)
        return True
