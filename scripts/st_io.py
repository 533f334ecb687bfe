"""Minimal safetensors reader/writer and bf16 bit helpers (numpy only).

Written from the format description, no third-party code:
  [8 bytes little-endian u64 N] [N bytes JSON header] [data]
  header = {"__metadata__": {...}, name: {"dtype": "BF16", "shape": [...], "data_offsets": [begin, end]}, ...}
  data_offsets are relative to the first byte after the header. The header is padded with
  spaces so that 8 + N is a multiple of 8 (keeps the data 8-byte aligned).

bf16 values are carried around as numpy uint16 arrays holding the raw bits.
"""

from __future__ import annotations

import json
import struct
from typing import Dict, List, Tuple

import numpy as np

# safetensors dtype name -> (numpy dtype of the raw storage, bytes per element)
_DTYPES = {
    "BF16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
}


# ---------------------------------------------------------------- bf16 bit math

def f32_to_bf16_bits(x) -> np.ndarray:
    """float32 -> bf16 bits (uint16), round to nearest, ties to even. NaN -> quiet NaN, sign kept."""
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    u = a.view(np.uint32).astype(np.uint64)
    lsb = (u >> np.uint64(16)) & np.uint64(1)
    rounded = (u + np.uint64(0x7FFF) + lsb) >> np.uint64(16)
    out = (rounded & np.uint64(0xFFFF)).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        out[nan] = ((u[nan] >> np.uint64(16)).astype(np.uint16) | np.uint16(0x0040))
    return out


def bf16_bits_to_f32(b) -> np.ndarray:
    """bf16 bits (uint16) -> float32 (exact)."""
    u = np.asarray(b, dtype=np.uint16).astype(np.uint32) << np.uint32(16)
    return u.view(np.float32)


def bf16_round(x) -> np.ndarray:
    """float32 -> nearest bf16 value, returned as float32."""
    return bf16_bits_to_f32(f32_to_bf16_bits(x))


# ---------------------------------------------------------------- writer

def write_safetensors(path: str, tensors: List[Tuple[str, str, np.ndarray]], metadata: Dict[str, str] | None = None) -> int:
    """Write tensors in the given order. tensors: (name, st_dtype, array). For BF16 pass uint16 bits.

    Returns the number of data bytes written (sum of tensor sizes).
    """
    header: Dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    blobs = []
    offset = 0
    seen = set()
    for name, st_dtype, arr in tensors:
        if name in seen:
            raise ValueError(f"duplicate tensor name {name}")
        seen.add(name)
        npdt = _DTYPES[st_dtype]
        a = np.ascontiguousarray(arr)
        if a.dtype.itemsize != npdt.itemsize or a.dtype.kind != npdt.kind:
            raise TypeError(f"{name}: array dtype {a.dtype} does not store {st_dtype}")
        raw = a.astype(npdt, copy=False).tobytes(order="C")
        header[name] = {"dtype": st_dtype, "shape": [int(d) for d in a.shape], "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    pad = (8 - (8 + len(hjson)) % 8) % 8
    hjson += b" " * pad
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for raw in blobs:
            f.write(raw)
    return offset


# ---------------------------------------------------------------- reader

def read_safetensors(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Read a whole file. Returns ({name: array with raw storage dtype (BF16 -> uint16)}, metadata)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} past end of file")
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out: Dict[str, np.ndarray] = {}
    spans = []
    for name, info in header.items():
        npdt = _DTYPES[info["dtype"]]
        b, e = info["data_offsets"]
        shape = tuple(info["shape"])
        count = int(np.prod(shape)) if shape else 1
        if e - b != count * npdt.itemsize:
            raise ValueError(f"{path}: {name}: {e - b} bytes for shape {shape} {info['dtype']}")
        if base + e > len(data):
            raise ValueError(f"{path}: {name}: data past end of file")
        out[name] = np.frombuffer(data, dtype=npdt, count=count, offset=base + b).reshape(shape).copy()
        spans.append((b, e))
    spans.sort()
    pos = 0
    for b, e in spans:
        if b != pos:
            raise ValueError(f"{path}: data not contiguous at {b} (expected {pos})")
        pos = e
    if base + pos != len(data):
        raise ValueError(f"{path}: {len(data) - base - pos} trailing bytes")
    return out, meta


def read_sharded(dirpath: str) -> Dict[str, np.ndarray]:
    """Read every tensor of a sharded checkpoint through model.safetensors.index.json."""
    import os

    with open(os.path.join(dirpath, "model.safetensors.index.json")) as f:
        index = json.load(f)
    out: Dict[str, np.ndarray] = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors, _ = read_safetensors(os.path.join(dirpath, shard))
        for k, v in tensors.items():
            if index["weight_map"].get(k) != shard:
                raise ValueError(f"{k} in {shard} but index says {index['weight_map'].get(k)}")
            out[k] = v
    missing = set(index["weight_map"]) - set(out)
    if missing:
        raise ValueError(f"tensors in index but not in shards: {sorted(missing)}")
    return out


# ---------------------------------------------------------------- json

def dump_json(path: str, obj, indent: int = 2) -> None:
    """JSON (indented), but every list of plain numbers kept on one line."""
    import re

    text = json.dumps(obj, indent=indent)

    def one_line(m):
        return "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]"

    text = re.sub(r"\[\s*((?:-?[0-9][0-9.eE+-]*\s*,\s*)*-?[0-9][0-9.eE+-]*)\s*\]", one_line, text)
    with open(path, "w") as f:
        f.write(text)
        f.write("\n")
