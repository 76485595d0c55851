"""What the API returns, as typed values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Union

import numpy as np

from ._vectors import decode_vector

Id = Union[int, str]
"""A row id: an unsigned 64-bit integer or a string, as the collection says."""


@dataclass(frozen=True)
class Attribute:
    """A typed attribute column: ``bool``, ``i64``, ``f64``, ``string`` or
    ``string_list``."""

    name: str
    type: str


@dataclass(frozen=True)
class CollectionInfo:
    """A collection's configuration and, from ``describe``, its statistics."""

    name: str
    dimension: int
    metric: str
    id_type: str
    attributes: List[Attribute]
    index: Dict[str, Any]
    incarnation: Optional[str] = None
    stats: Optional[Dict[str, Any]] = None

    @classmethod
    def from_json(cls, body: Dict[str, Any]) -> "CollectionInfo":
        return cls(
            name=body["name"],
            dimension=body["dimension"],
            metric=body["metric"],
            id_type=body.get("id_type", "u64"),
            attributes=[Attribute(a["name"], a["type"]) for a in body.get("attributes", [])],
            index=body.get("index", {}),
            incarnation=body.get("incarnation"),
            stats=body.get("stats"),
        )


@dataclass(frozen=True)
class WriteResult:
    """An acknowledged write. ``lsn`` is its place in the collection's order:
    pass the result (or the lsn) as ``consistency`` to read your write."""

    lsn: int
    rows: int
    duplicate: bool
    request_id: Optional[str] = None


@dataclass(frozen=True)
class BulkWriteResult:
    """What ``upsert_many`` wrote: the last batch's lsn covers them all."""

    lsn: int
    rows: int
    batches: int


@dataclass(frozen=True)
class Row:
    """A returned row. ``version`` is the LSN of the write that produced it
    (what ``if_version`` compares with); ``distance`` is set for vector
    queries (smaller is closer); ``vector`` when asked for, as a float32
    array."""

    id: Id
    version: int = 0
    distance: Optional[float] = None
    attributes: Optional[Dict[str, Any]] = None
    vector: Optional[np.ndarray] = None

    @classmethod
    def from_json(cls, body: Dict[str, Any]) -> "Row":
        vector = body.get("vector")
        return cls(
            id=body["id"],
            version=body.get("version", 0),
            distance=body.get("distance"),
            attributes=body.get("attributes"),
            vector=None if vector is None else decode_vector(vector),
        )


@dataclass(frozen=True)
class QueryResult:
    """A query's answer: rows closest first (or in id order for a filter-only
    scan), the log position they reflect, and the next page's cursor."""

    rows: List[Row]
    lsn: int
    next_cursor: Optional[Id] = None
    explain: Optional[Dict[str, Any]] = None

    @property
    def ids(self) -> List[Id]:
        return [r.id for r in self.rows]

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Row:
        return self.rows[i]

    @classmethod
    def from_json(cls, body: Dict[str, Any]) -> "QueryResult":
        return cls(
            rows=[Row.from_json(r) for r in body["results"]],
            lsn=body["lsn"],
            next_cursor=body.get("next_cursor"),
            explain=body.get("explain"),
        )


@dataclass(frozen=True)
class FlushResult:
    """What a flush wrote."""

    checkpoint_lsn: int
    segments_written: int
    rows_flushed: int
    deletes_flushed: int


@dataclass(frozen=True)
class ApiKey:
    """An API key's record. ``key`` (the secret) is set only when created."""

    id: str
    name: str
    role: str
    created_at_ms: int
    collections: Optional[List[str]] = None
    revoked_at_ms: Optional[int] = None
    key: Optional[str] = field(default=None, repr=False)

    @classmethod
    def from_json(cls, body: Dict[str, Any]) -> "ApiKey":
        return cls(
            id=body["id"],
            name=body["name"],
            role=body["role"],
            created_at_ms=body["created_at_ms"],
            collections=body.get("collections"),
            revoked_at_ms=body.get("revoked_at_ms"),
            key=body.get("key"),
        )


@dataclass(frozen=True)
class ImportStatus:
    """A bulk import job: ``state`` is ``queued``, ``running``,
    ``committing``, ``done`` or ``failed``; once done, ``lsn`` is every
    imported row's version (pass it as ``consistency`` to read them)."""

    job_id: str
    state: str
    source: str
    files: int
    files_done: int
    rows_read: int
    rows_imported: int
    rows_rejected: int
    errors: List[Dict[str, Any]]
    segments: int
    lsn: Optional[int] = None
    error: Optional[str] = None

    @property
    def ended(self) -> bool:
        return self.state in ("done", "failed")

    @classmethod
    def from_json(cls, body: Dict[str, Any]) -> "ImportStatus":
        return cls(
            job_id=body["job_id"],
            state=body["state"],
            source=body["source"],
            files=body.get("files", 0),
            files_done=body.get("files_done", 0),
            rows_read=body.get("rows_read", 0),
            rows_imported=body.get("rows_imported", 0),
            rows_rejected=body.get("rows_rejected", 0),
            errors=list(body.get("errors", [])),
            segments=body.get("segments", 0),
            lsn=body.get("lsn"),
            error=body.get("error"),
        )
