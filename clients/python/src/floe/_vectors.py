"""Vectors on the wire: base64 of little-endian float32, so neither side
prints or parses decimal floats and every bit arrives."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np


def as_matrix(vectors: Any) -> np.ndarray:
    """A 2-D little-endian float32 array from a numpy array or nested lists."""
    m = np.asarray(vectors, dtype="<f4")
    if m.ndim == 1 and m.size == 0:
        return m.reshape(0, 0)
    if m.ndim != 2:
        raise ValueError(f"vectors must be 2-D (rows x dimension), got shape {m.shape}")
    return np.ascontiguousarray(m)


def encode_vector(vector: Any) -> str:
    """One vector as base64 of its little-endian float32 bytes."""
    v = np.ascontiguousarray(np.asarray(vector, dtype="<f4"))
    if v.ndim != 1:
        raise ValueError(f"a vector must be 1-D, got shape {v.shape}")
    return base64.b64encode(v.tobytes()).decode("ascii")


def encode_matrix(matrix: np.ndarray) -> str:
    """Every row of a float32 matrix, row after row, as one base64 string."""
    return base64.b64encode(np.ascontiguousarray(matrix, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(value: Any) -> np.ndarray:
    """A returned vector (base64 or a JSON list) as a float32 array."""
    if isinstance(value, str):
        return np.frombuffer(bytearray(base64.b64decode(value)), dtype="<f4")
    return np.asarray(value, dtype=np.float32)
