"""Upload one rank's share of a checkpoint to `moeflux serve` as one part of it (Python standard library only).

Every rank of a training job calls `upload_part` with its own pieces of the model's tensors: FSDP row
ranges, an expert-parallel range of experts, whole replicated tensors. The part is sent as one safetensors
blob whose `__metadata__` says where each piece starts in its whole tensor (`DCP_SHARDING_INFO`, as
PyTorch DCP's Hugging Face writer does); moeflux commits the checkpoint atomically once all parts have
arrived and every tensor is covered exactly once.

    from moeflux_parts import Piece, upload_part, declare_manifest

    # once, from any rank, before the parts (optional: lets moeflux write each part into place as it arrives)
    declare_manifest("http://trainer-0:8470", "step-1000", parts=world_size,
                     tensors={name: (dtype, whole_shape) for ...})
    # on every rank
    upload_part("http://trainer-0:8470", "step-1000", part=rank, parts=world_size,
                pieces=[Piece("model.embed_tokens.weight", shard, offsets=[row0, 0]), ...])

A piece's data is a torch tensor, a numpy array or any buffer (bytes, memoryview, array.array); give
`dtype` and `shape` for a buffer whose type does not say them. Bytes are sent as they are (row-major,
little-endian), straight from the tensor's memory: nothing is copied into one big body.
"""

import array
import http.client
import json
import math
import struct
import time
from urllib.parse import urlencode, urlsplit

__all__ = ["Piece", "MoefluxError", "upload_part", "declare_manifest"]

# torch dtype names, numpy dtype names and array.array type codes, as safetensors names them.
_TORCH = {"torch.bfloat16": "BF16", "torch.float16": "F16", "torch.float32": "F32", "torch.float64": "F64",
          "torch.int8": "I8", "torch.uint8": "U8", "torch.int16": "I16", "torch.int32": "I32", "torch.int64": "I64",
          "torch.bool": "BOOL", "torch.float8_e4m3fn": "F8_E4M3", "torch.float8_e5m2": "F8_E5M2"}
_NUMPY = {"bfloat16": "BF16", "float16": "F16", "float32": "F32", "float64": "F64", "int8": "I8", "uint8": "U8",
          "int16": "I16", "uint16": "U16", "int32": "I32", "uint32": "U32", "int64": "I64", "uint64": "U64",
          "bool": "BOOL"}
_ARRAY = {("b", 1): "I8", ("B", 1): "U8", ("h", 2): "I16", ("H", 2): "U16", ("i", 4): "I32", ("I", 4): "U32",
          ("l", 8): "I64", ("L", 8): "U64", ("q", 8): "I64", ("Q", 8): "U64", ("f", 4): "F32", ("d", 8): "F64"}

_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
          "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_SEND_SLICE = 1 << 20


class MoefluxError(RuntimeError):
    """The service refused the part or the checkpoint; `status` is the HTTP status, `body` its JSON answer."""

    def __init__(self, status, body):
        super().__init__(f"moeflux answered {status}: {body.get('error', body)}")
        self.status = status
        self.body = body


class Piece:
    """A piece of tensor `name`: `data` holds the elements at `offsets` (where the piece starts in the
    whole tensor, one per dimension; all zeros for a whole tensor) of a piece of shape `shape`."""

    def __init__(self, name, data, offsets=None, dtype=None, shape=None):
        self.name = name
        self.dtype, self.shape, self.bytes = _describe(data, dtype, shape)
        self.offsets = list(offsets) if offsets is not None else [0] * len(self.shape)
        if len(self.offsets) != len(self.shape):
            raise ValueError(f"{name}: {len(self.offsets)} offsets for a piece of {len(self.shape)} dimensions")


def _describe(data, dtype, shape):
    """The safetensors dtype, the shape and a byte view of the data, without copying it where it can."""
    if hasattr(data, "untyped_storage") and hasattr(data, "dtype"):  # torch
        t = data.detach().contiguous().cpu()
        dtype = dtype or _TORCH.get(str(t.dtype))
        shape = list(t.shape) if shape is None else list(shape)
        view = memoryview(t.reshape(-1).view(__import__("torch").uint8).numpy()) if t.numel() else memoryview(b"")
    elif hasattr(data, "__array_interface__") and hasattr(data, "dtype"):  # numpy
        import numpy  # only when given numpy arrays
        a = numpy.ascontiguousarray(data)
        dtype = dtype or _NUMPY.get(a.dtype.name)
        shape = list(a.shape) if shape is None else list(shape)
        view = memoryview(a.reshape(-1).view(numpy.uint8))
    else:
        view = memoryview(data)
        if isinstance(data, array.array):
            dtype = dtype or _ARRAY.get((data.typecode, data.itemsize))
            shape = [len(data)] if shape is None else list(shape)
        elif shape is None:
            raise ValueError("cannot tell the shape of a %s: give shape=" % type(data).__name__)
        view = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
    if dtype is None:
        raise ValueError("cannot tell the dtype of a %s: give dtype=" % type(data).__name__)
    if dtype not in _SIZES:
        raise ValueError(f"unknown dtype {dtype!r}: use a safetensors name such as BF16 or F32")
    shape = [int(d) for d in shape]
    expected = _SIZES[dtype] * math.prod(shape)
    if view.nbytes != expected:
        raise ValueError(f"{view.nbytes} bytes for a {dtype} piece of shape {shape}, which holds {expected}")
    return dtype, shape, view


def _blob(pieces):
    """The safetensors header (with its length prefix) of one blob holding `pieces` back to back."""
    header, sharding, at = {}, {}, 0
    for p in pieces:
        if p.name in header:
            raise ValueError(f"{p.name} is given twice in one part")
        header[p.name] = {"dtype": p.dtype, "shape": p.shape, "data_offsets": [at, at + p.bytes.nbytes]}
        sharding[p.name] = {"saved_offsets": p.offsets}
        at += p.bytes.nbytes
    header["__metadata__"] = {"DCP_SHARDING_INFO": json.dumps(sharding), "DCP_VERSION": "1.0", "format": "pt"}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded, at


def _connection(base_url, timeout):
    url = urlsplit(base_url)
    cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    return cls(url.hostname, url.port or (443 if url.scheme == "https" else 80), timeout=timeout)


def _request(base_url, method, path, token, timeout, body=None, headers=None):
    """One request; returns (status, JSON answer). Connection failures raise OSError or HTTPException."""
    conn = _connection(base_url, timeout)
    try:
        conn.putrequest(method, path)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if token:
            conn.putheader("Authorization", f"Bearer {token}")
        if body is None:
            conn.putheader("Content-Length", "0")
            conn.endheaders()
        else:
            body(conn)
        response = conn.getresponse()
        text = response.read()
        return response.status, json.loads(text) if text else {}
    finally:
        conn.close()


def upload_part(base_url, checkpoint_id, part, parts, pieces, *, token=None, query=None, retries=3, backoff=2.0,
                timeout=600):
    """Streams `pieces` (Piece objects) as part `part` (0..parts-1, usually the rank) of checkpoint
    `checkpoint_id` to the service at `base_url` (http://host:port).

    A part whose connection breaks, or that the service is too busy to take (503) or still holds from a broken
    attempt (409 "is being received"), is sent again, up to `retries` more times, `backoff` seconds apart and
    doubling: the service drops a broken part whole.
    A part the service says has arrived already (409), as when its answer was lost, counts as sent.
    `query` passes the model config (num_hidden_layers, num_experts, moe_intermediate_size) when the
    service has no --config. Returns the service's JSON answer: the checkpoint's status while other parts
    are missing (`state` "receiving", `parts_received`), or its commit summary for the part that completes
    it (if that answer is lost, say to `timeout` during a long commit, the part sent again is told it has
    arrived and waits for the commit). Raises MoefluxError when the service refuses the part or the
    checkpoint fails."""
    pieces = list(pieces)
    prefix, data_bytes = _blob(pieces)
    path = f"/v1/checkpoints/{checkpoint_id}/parts/{part}?" + urlencode({"parts": parts, **(query or {})})

    def send(conn):
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(len(prefix) + data_bytes))
        conn.endheaders()
        conn.send(prefix)
        for p in pieces:
            for at in range(0, p.bytes.nbytes, _SEND_SLICE):
                conn.send(p.bytes[at:at + _SEND_SLICE])

    attempt = 0
    while True:
        try:
            status, body = _request(base_url, "PUT", path, token, timeout, send)
        except (OSError, http.client.HTTPException):
            status, body = None, {}
        if status == 200:
            return body
        if status == 409 and "has arrived already" in body.get("error", ""):
            return _after_arrival(base_url, checkpoint_id, token, timeout)
        # The service may not have noticed yet that a broken attempt's connection is gone (it does once the
        # connection closes, or after its --body-idle-timeout): that attempt still holds the part.
        held = status == 409 and "is being received" in body.get("error", "")
        if status is not None and status != 503 and status < 500 and not held:
            raise MoefluxError(status, body)
        if status is not None and body.get("state") == "failed":
            raise MoefluxError(status, body)
        if attempt >= retries:
            if status is None:
                raise MoefluxError(0, {"error": f"part {part} could not be sent after {retries + 1} attempts"})
            raise MoefluxError(status, body)
        time.sleep(backoff * (2 ** attempt))
        attempt += 1


def _after_arrival(base_url, checkpoint_id, token, timeout):
    """The answer a part that has arrived would have had: the status while parts are missing, the commit once
    the checkpoint has every part (waiting for it while it commits); raises if the checkpoint failed."""
    while True:
        status, body = _request(base_url, "GET", f"/v1/checkpoints/{checkpoint_id}", token, timeout)
        state = body.get("state")
        if state == "committed" or (state == "receiving" and len(body.get("parts_received", [])) < body.get("parts", 0)):
            return body
        if state != "receiving":
            raise MoefluxError(status, body)
        time.sleep(1)


def declare_manifest(base_url, checkpoint_id, parts, tensors, *, token=None, query=None, timeout=60):
    """Declares checkpoint `checkpoint_id` before its parts: `parts` parts and `tensors`, a dict of each
    tensor's name to (dtype, whole shape). The service then lays the output out at once and writes each
    part into place as soon as it arrives, and refuses a part with a tensor, type or piece the manifest
    does not allow. Returns the checkpoint's status."""
    manifest = json.dumps({"parts": parts, "tensors": {n: {"dtype": d, "shape": list(s)} for n, (d, s) in tensors.items()}})
    encoded = manifest.encode()
    path = f"/v1/checkpoints/{checkpoint_id}/manifest" + (f"?{urlencode(query)}" if query else "")

    def send(conn):
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(encoded)))
        conn.endheaders()
        conn.send(encoded)

    status, body = _request(base_url, "PUT", path, token, timeout, send)
    if status != 200:
        raise MoefluxError(status, body)
    return body
