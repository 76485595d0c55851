"""Floe's Python client.

    import numpy as np
    import floe

    client = floe.Client("http://127.0.0.1:7700")
    docs = client.create_collection("docs", dimension=3, metric="cosine",
                                    attributes={"year": "i64"})
    docs.upsert([1, 2], np.array([[1, 0, 0], [0, 1, 0]]), {"year": [2020, 2024]})
    for row in docs.query([1, 0.1, 0], top_k=2, filter="year >= 2020"):
        print(row.id, row.distance, row.attributes)
"""

from ._async import AsyncClient, AsyncCollection
from ._client import Client, Collection
from ._errors import (
    AuthenticationError,
    BadRequestError,
    ConditionFailedError,
    ConflictError,
    FloeConnectionError,
    FloeError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServerError,
    UnavailableError,
)
from ._types import (
    ApiKey,
    Attribute,
    BulkWriteResult,
    CollectionInfo,
    FlushResult,
    ImportStatus,
    QueryResult,
    Row,
    WriteResult,
)

__all__ = [
    "ApiKey",
    "AsyncClient",
    "AsyncCollection",
    "Attribute",
    "AuthenticationError",
    "BadRequestError",
    "BulkWriteResult",
    "Client",
    "Collection",
    "CollectionInfo",
    "ConditionFailedError",
    "ConflictError",
    "FloeConnectionError",
    "FloeError",
    "FlushResult",
    "ImportStatus",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "QueryResult",
    "Row",
    "ServerError",
    "UnavailableError",
    "WriteResult",
]
__version__ = "0.1.0"
