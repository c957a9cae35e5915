"""Reading PyTorch checkpoints without PyTorch, and without running code from them.

A ``torch.save`` file (PyTorch ≥ 1.6) is a zip archive: ``<root>/data.pkl`` pickles the saved
object, each tensor a call of ``torch._utils._rebuild_tensor_v2`` on a persistent reference
``('storage', torch.<Type>Storage, key, device, numel)``, and ``<root>/data/<key>`` holds that
storage's raw bytes (byte order in ``<root>/byteorder``, little-endian when absent).

``load`` unpickles with an allow-list: the globals of that scheme resolve to stand-ins here that
build ``TorchTensor`` references, containers rebuild as plain Python objects, and any other global
(``os.system``, a class of the training code, ...) raises ``UnsafeCheckpointError`` before it is
called. A tensor's bytes are read only when ``TorchTensor.numpy()`` is called, so reading the
weights of one U-Net out of a trainer checkpoint that also holds optimizer moments costs the memory
of those weights only.
"""

import collections
import dataclasses
import io
import math
import os
import pickle
import struct
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from gcd_jax.errors import InputError, MissingError

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafeCheckpointError(InputError):
    """The pickle names a global outside the tensor-rebuild allow-list."""


class NotATorchCheckpointError(InputError):
    """The file is not a zip-format ``torch.save`` archive."""


@dataclasses.dataclass(frozen=True, eq=False)
class _Archive:
    path: str
    root: str  # the archive's top-level folder, e.g. 'archive'
    big_endian: bool
    entries: dict[str, zipfile.ZipInfo]  # by name, read once from the central directory


@dataclasses.dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _Storage:
    archive: _Archive
    key: str
    dtype: np.dtype
    numel: int


@dataclasses.dataclass(frozen=True)
class TorchTensor:
    """A tensor of the checkpoint, not read yet.

    ``shape`` and ``dtype`` are known from the pickle; ``numpy()`` reads the bytes (a fresh,
    C-contiguous array in native byte order).
    """

    storage: _Storage
    offset: int  # in elements
    shape: tuple[int, ...]
    stride: tuple[int, ...]  # in elements

    @property
    def dtype(self) -> np.dtype:
        return self.storage.dtype

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def numpy(self) -> np.ndarray:
        if self.size == 0:
            return np.zeros(self.shape, self.dtype)
        span = 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True))
        if self.offset < 0 or min(self.stride, default=0) < 0:
            raise InputError(f"tensor of storage {self.storage.key} has a negative offset/stride")
        if self.offset + span > self.storage.numel:
            raise InputError(
                f"tensor exceeds its storage {self.storage.key} ({self.storage.numel})"
            )
        flat = _read(self.storage, self.offset, span)
        if span == self.size and self.stride == _contiguous_strides(self.shape):
            return flat.reshape(self.shape)
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat, self.shape, tuple(s * itemsize for s in self.stride), writeable=False
        )
        return np.ascontiguousarray(view)


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def _read(storage: _Storage, start: int, count: int) -> np.ndarray:
    """Elements ``[start, start + count)`` of a storage, in native byte order."""
    archive = storage.archive
    dtype = np.dtype(storage.dtype)
    name = f"{archive.root}/data/{storage.key}"
    info = archive.entries.get(name)
    if info is None:
        raise InputError(f"{archive.path}: storage {name} is missing")
    if info.file_size != storage.numel * dtype.itemsize:
        raise InputError(f"{archive.path}: storage {name} has {info.file_size} bytes")
    raw = np.empty(count * dtype.itemsize, np.uint8)
    if info.compress_type == zipfile.ZIP_STORED:  # what torch.save writes: read in place
        with open(archive.path, "rb") as f:
            f.seek(info.header_offset)
            name_len, extra_len = struct.unpack("<HH", f.read(30)[26:30])
            f.seek(info.header_offset + 30 + name_len + extra_len + start * dtype.itemsize)
            got = f.readinto(raw)
    else:
        with zipfile.ZipFile(archive.path) as zf, zf.open(info) as f:
            f.seek(start * dtype.itemsize)
            got = f.readinto(raw)
    if got != raw.size:
        raise InputError(f"{archive.path}: storage {name} is truncated")
    if archive.big_endian:
        return raw.view(dtype.newbyteorder(">")).astype(dtype)
    return raw.view(dtype)


def _rebuild_tensor(storage, offset, shape, stride, requires_grad=False, hooks=None, meta=None):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: a ``TorchTensor`` reference."""
    del requires_grad, hooks, meta
    if not isinstance(storage, _Storage):
        raise InputError("tensor rebuilt from something that is not a storage")
    if not all(isinstance(v, int) for v in (offset, *shape, *stride)) or len(shape) != len(stride):
        raise InputError(f"malformed tensor: offset {offset!r}, size {shape!r}, stride {stride!r}")
    return TorchTensor(storage, offset, tuple(shape), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    """Stand-in for ``torch._utils._rebuild_parameter[_with_state]``: the tensor itself."""
    del requires_grad, hooks, state
    return data


_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: _Archive):
        super().__init__(io.BytesIO(data))
        self._archive = archive

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(np.dtype(_STORAGE_DTYPES[name]))
        if (module, name) in _GLOBALS:
            return _GLOBALS[module, name]
        raise UnsafeCheckpointError(
            f"{self._archive.path}: the checkpoint's pickle refers to the global "
            f"'{module}.{name}', which is not one of the tensor-rebuild functions a state dict "
            "needs; refusing to load it (a checkpoint must never run code)."
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise InputError(f"{self._archive.path}: unknown persistent reference {pid!r:.80}")
        _, storage_type, key, _device, numel = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int):
            raise InputError(f"{self._archive.path}: malformed storage reference {pid!r:.80}")
        return _Storage(self._archive, str(key), storage_type.dtype, numel)


def load(path: str) -> Any:
    """The object a ``torch.save`` zip archive holds, tensors as ``TorchTensor`` references.

    Raises (all ``UserError``s):
      MissingError: no such file.
      NotATorchCheckpointError: not a zip archive with one ``data.pkl`` (e.g. a legacy, pre-1.6
        ``torch.save`` file or another kind of file).
      UnsafeCheckpointError: the pickle names a global outside the allow-list.
      InputError: a malformed archive (a storage missing, truncated or too small).
    """
    if not os.path.isfile(path):
        raise MissingError(f"Checkpoint {path} does not exist.")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            legacy = f.read(2) == b"\x80\x02"
        hint = (
            "a legacy (PyTorch < 1.6) torch.save file: re-save it with a newer PyTorch"
            if legacy
            else "not a PyTorch checkpoint"
        )
        raise NotATorchCheckpointError(f"{path} is not a zip archive: {hint}.")
    with zipfile.ZipFile(path) as zf:
        pickles = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise NotATorchCheckpointError(
                f"{path} is a zip archive but not a torch.save file (no <folder>/data.pkl)."
            )
        root = pickles[0].split("/")[0]
        entries = {info.filename: info for info in zf.infolist()}
        order = (
            zf.read(f"{root}/byteorder").decode() if f"{root}/byteorder" in entries else "little"
        )
        data = zf.read(pickles[0])
    archive = _Archive(path, root, order.strip() == "big", entries)
    return _RestrictedUnpickler(data, archive).load()
