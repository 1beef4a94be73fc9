"""Compact storage of a pruned model: kept weights as positions + values in one safetensors file.

A model pruned to 3 % still occupies 100 % of its dense size until the zeros are dropped.
:func:`save_compact` writes every targeted matrix as the positions and values of its kept
entries and every other tensor (embeddings, biases, LayerNorm, pooler, head) dense, in one
safetensors file: raw tensors behind a JSON header, no pickle, so reading it runs no code.
:func:`load_compact` checks the whole file before it builds or changes a model, and
:func:`size_report` gives the byte counts, component by component.

**Format, version 1.** A targeted matrix ``NAME.weight`` of stored shape ``(R, C)`` -- ``(out,
in)`` for ``nn.Linear``, ``(in, out)`` for GPT-2's ``Conv1D`` -- keeps ``k`` entries, listed in
row-major order. It is stored under these keys:

* ``NAME.weight::values``: ``(k,)``, the kept weights in the weight's dtype; or, with
  ``int8=True``, int8 codes in ``[-127, 127]`` plus ``NAME.weight::scales``: ``(R,)`` float32;
* the positions, in whichever of three encodings is smallest (ties go to the first listed):

  - ``bitmask``: ``NAME.weight::bitmask``, ``(ceil(RC/8),)`` uint8; entry ``i`` of the
    flattened mask is bit ``i mod 8`` (least significant first) of byte ``i div 8``; the
    padding bits of the last byte are 0;
  - ``csr8`` / ``csr16``: each row is cut into ``S = ceil(C/B)`` segments of ``B = 256`` /
    ``65536`` columns and the ``R*S`` segments are stored as compressed sparse rows:
    ``NAME.weight::cols``, ``(k,)`` uint8 / uint16, the column inside the segment (strictly
    increasing within a segment), and ``NAME.weight::rowptr``, ``(R*S + 1,)`` uint16 if
    ``k < 65536`` else int32, with ``rowptr[0] = 0``, non-decreasing, ``rowptr[-1] = k``.
    ``csr16`` with ``C <= 65536`` is textbook CSR; ``csr8`` trades ``S`` pointers a row for
    1-byte column indices.

Every other state-dict entry is stored dense under its own key; tied weights (GPT-2's
``lm_head.weight`` is ``transformer.wte.weight``) are stored once. The header metadata holds
``format`` (``mplib.compact``), ``format_version`` (``1``), ``matrices`` (JSON list of ``name``,
``shape``, ``kept``, ``index``, ``values``), ``dtype`` (of the targeted weights),
``architecture`` and ``config`` (the transformers class name and its config as JSON; absent
for a plain torch module, which then loads only into a skeleton you pass) and ``checksum``
(SHA-256 over the other metadata and every tensor's name, dtype, shape and bytes: it catches
corruption, it is not a signature). A loaded model is plain (baked): pruned entries are +0.0.

**Size arithmetic** (bytes; matrix ``R x C``, ``k`` kept, ``p = 2`` if ``k < 65536`` else 4):
dense fp32 ``4RC``; values ``4k`` (fp32) or ``k + 4R`` (int8 and its scales); positions
``ceil(RC/8)`` (bitmask), ``k + p(R ceil(C/256) + 1)`` (csr8), ``2k + p(R ceil(C/65536) + 1)``
(csr16). A kept entry costs 1 byte of csr8 index against 1/(8 d) bytes of bitmask at density
``d``, so csr8 wins below about 11.5 % kept. all-MiniLM-L6-v2's 36 targeted matrices (6 x [4 x
384x384, 1536x384, 384x1536], 10.62 M weights, 42.47 MB in fp32) at ``ceil(vN)`` kept each,
every one stored as csr8 (measured by ``tests/test_compact.py``; MB = 10^6 bytes):

=========  ===========  ==========  ===========  ==========
kept       fp32 values  ratio       int8 values  ratio
=========  ===========  ==========  ===========  ==========
10 %       5.41 MB      7.85x       2.31 MB      18.4x
3 %        1.69 MB      25.1x       0.82 MB      51.7x
=========  ===========  ==========  ===========  ==========

These sizes depend only on the shapes and the kept counts, not on where the kept entries are.
The whole model (a ``BertModel`` of that config) shrinks far less: its 11.92 M embedding
weights (47.67 MB of 90.85 MB in fp32) stay dense, so at 3 % kept the file holds 50.08 MB
(fp32) or 49.21 MB (int8), 1.8x smaller, and the embeddings are 97 % of it. (PruneBERT's
340 MB -> 11 MB at 6 % kept, with int8 + CSR + gzip, is BERT-base's *encoder* alone: its 12
layers hold 85.05 M parameters, 340.2 MB in fp32; the 23.8 M embedding weights come on top.)

**int8** (per row, symmetric): ``s_r`` is the smallest float32 ``>= max_j |w_rj| / 127`` over
the kept entries of row ``r`` (1.0 for a row with none, or only zeros);
``q = round(w / s_r)`` (half to even) lies in ``[-127, 127]``, and the loaded weight is
``q * s_r`` in float32. Bound, for weights in float32's normal range:
``|q s_r - w| <= s_r (1/2 + 2^-17) <= max_j |w_rj| / 253.99``. An entry kept but coded 0 is
still kept: masks reload bit for bit, with or without int8.

**Loading untrusted files.** Before a model is built or changed, :func:`load_compact` checks the
safetensors container (header length, JSON, no duplicate keys, dtypes, shapes, byte ranges that
tile the data exactly), the format and its version, that the keys are exactly those the model
expects (no key missing, none unknown), every dtype and shape, and the contents: index ranges,
segment pointers, bitmask length and padding, value counts, int8 codes and scales (finite
and positive), then the checksum. Any failure is a ``ValueError`` naming the key and the problem. A
skeleton built from the stored config is first built on the ``meta`` device (no memory), so an
oversized config is caught by the shape checks too.

Taught in: book/13_deploying.ipynb.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import PruningConfig
from .masked import is_supported
from .surgery import check_module, masked_layers, select_modules

__all__ = ["FORMAT", "FORMAT_VERSION", "load_compact", "save_compact", "size_report"]

FORMAT = "mplib.compact"
FORMAT_VERSION = 1
_SEP = "::"
_SEGMENT = {"csr8": 256, "csr16": 65536}
_COLS_DTYPE = {"csr8": "U8", "csr16": "U16"}
_MAX_HEADER = 100_000_000  # the safetensors library's own limit
_EMBEDDING = re.compile(r"embed|(^|\.)(wte|wpe)(\.|$)", re.IGNORECASE)

# safetensors dtype code -> (numpy little-endian dtype, torch dtype); torch has uint16 from 2.3
_DTYPES = {code: (np_dtype, getattr(torch, name)) for code, np_dtype, name in (
    ("F64", "<f8", "float64"), ("F32", "<f4", "float32"), ("F16", "<f2", "float16"),
    ("BF16", "<u2", "bfloat16"), ("I64", "<i8", "int64"), ("I32", "<i4", "int32"),
    ("I16", "<i2", "int16"), ("I8", "i1", "int8"), ("U8", "u1", "uint8"),
    ("U16", "<u2", "uint16"), ("U32", "<u4", "uint32"), ("U64", "<u8", "uint64"),
    ("BOOL", "u1", "bool")) if hasattr(torch, name)}
_CODE = {t: code for code, (_, t) in _DTYPES.items()}
_VALUE_KINDS = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
                "int8": "I8"}


# -- what is stored -----------------------------------------------------------------------------
def _targets(model: nn.Module, modules) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{module name: (weight, boolean mask)}`` of the matrices to store sparse."""
    check_module(model)
    layers = masked_layers(model)
    if layers:
        if modules is not None:
            raise ValueError("modules= is for a plain (baked) model; a wrapped model stores its "
                             "masked layers")
        return {n: (lay.weight.detach(), lay.mask().bool()) for n, lay in layers.items()}
    config = PruningConfig(method="magnitude", keep_ratio=1.0, target_modules=modules)
    names = select_modules(model, config)
    out = {}
    for name in names:  # a baked model: the mask is where the weight is not zero
        w = model.get_submodule(name).weight.detach()
        out[name] = (w, w != 0)
    return out


def _aliases(model: nn.Module) -> dict[str, str]:
    """``{alias key: first key}`` for state entries that are the same tensor (tied weights)."""
    first: dict[int, str] = {}
    alias = {}
    named = list(model.named_parameters(remove_duplicate=False))
    named += list(model.named_buffers(remove_duplicate=False))
    for key, t in named:
        if id(t) in first:
            alias[key] = first[id(t)]
        else:
            first[id(t)] = key
    return alias


def _dense_keys(model: nn.Module, sparse: list[str]) -> dict[str, torch.Tensor]:
    """The state entries stored dense: all but the targeted weights, their scores, aliases."""
    state = model.state_dict(keep_vars=True)
    alias = _aliases(model)
    weights = {f"{n}.weight" for n in sparse}
    drop = {f"{n}.scores" for n in masked_layers(model)}
    for key, source in alias.items():
        if key in weights or source in weights:
            raise ValueError(f"targeted weight {key if key in weights else source!r} is tied to "
                             f"{source if key in weights else key!r}; untie it or exclude it")
    return {k: v for k, v in state.items() if k not in weights and k not in drop and k not in alias}


def _csr_pointer_code(kept: int) -> str:
    if kept >= 2**31:
        raise ValueError(f"{kept} kept entries in one matrix: more than this format indexes")
    return "U16" if kept < 65536 else "I32"


def _index_sizes(rows: int, cols: int, kept: int) -> dict[str, int]:
    """Bytes of each position encoding of an ``rows x cols`` matrix with ``kept`` entries."""
    p = 2 if _csr_pointer_code(kept) == "U16" else 4
    return {
        "bitmask": -(-rows * cols // 8),
        "csr8": kept + p * (rows * -(-cols // 256) + 1),
        "csr16": 2 * kept + p * (rows * -(-cols // 65536) + 1),
    }


def _round_up_f32(x: np.ndarray) -> np.ndarray:
    """The smallest float32 >= each float64 value."""
    down = x.astype(np.float32)
    return np.where(down.astype(np.float64) < x, np.nextafter(down, np.float32(np.inf)), down)


def _quantise(values: np.ndarray, rows: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8 codes and float32 scales (see the module docstring)."""
    v = values.astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError("int8 needs finite weights; a kept weight is NaN or infinite")
    peak = np.zeros(n_rows)
    np.maximum.at(peak, rows, np.abs(v))
    scales = _round_up_f32(peak / 127.0)
    scales[peak == 0] = 1.0
    codes = np.rint(v / scales[rows].astype(np.float64))
    return codes.astype(np.int8), scales.astype(np.float32)


def _encode(name: str, weight: torch.Tensor, mask: torch.Tensor, int8: bool):
    """``(tensors, record)`` of one matrix in the compact format."""
    if weight.dim() != 2 or mask.shape != weight.shape:
        raise ValueError(f"{name}: expected a 2-D weight and a mask of its shape")
    if not weight.is_floating_point() or weight.dtype not in _CODE:
        raise ValueError(f"{name}: weight dtype {weight.dtype} is not a float type this format "
                         "stores")
    rows, cols = weight.shape
    flat = torch.flatten(mask.cpu()).nonzero().squeeze(1).numpy()
    kept = int(flat.size)
    sizes = _index_sizes(rows, cols, kept)
    index = min(sizes, key=lambda k: (sizes[k], list(sizes).index(k)))
    key = f"{name}.weight{_SEP}"
    values = weight.detach().cpu().reshape(-1)[torch.from_numpy(flat)].contiguous()
    out = {}
    if int8:
        codes, scales = _quantise(values.double().numpy(), flat // cols, rows)
        out[key + "values"] = torch.from_numpy(codes)
        out[key + "scales"] = torch.from_numpy(scales)
        kind = "int8"
    else:
        out[key + "values"] = values
        kind = str(weight.dtype).removeprefix("torch.")
    if index == "bitmask":
        bits = np.zeros(rows * cols, dtype=np.uint8)
        bits[flat] = 1
        out[key + "bitmask"] = torch.from_numpy(np.packbits(bits, bitorder="little"))
    else:
        width = _SEGMENT[index]
        segments = -(-cols // width)
        row, col = flat // cols, flat % cols
        seg = row * segments + col // width
        counts = np.bincount(seg, minlength=rows * segments)
        ptr_dtype = np.uint16 if _csr_pointer_code(kept) == "U16" else np.int32
        rowptr = np.concatenate([[0], np.cumsum(counts)]).astype(ptr_dtype)
        col_dtype = np.uint8 if index == "csr8" else np.uint16
        out[key + "cols"] = torch.from_numpy((col % width).astype(col_dtype))
        out[key + "rowptr"] = torch.from_numpy(rowptr)
    record = dict(name=name, shape=[rows, cols], kept=kept, index=index, values=kind)
    return out, record


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _checksum(metadata: dict, tensors: dict[str, tuple[str, list[int], bytes]]) -> str:
    h = hashlib.sha256()
    meta = {k: v for k, v in metadata.items() if k != "checksum"}
    h.update(json.dumps(meta, sort_keys=True).encode())
    for key in sorted(tensors):
        code, shape, data = tensors[key]
        h.update(json.dumps([key, code, list(shape)]).encode())
        h.update(data)
    return "sha256:" + h.hexdigest()


def _plan(model: nn.Module, int8: bool, modules):
    targets = _targets(model, modules)
    dtypes = {w.dtype for w, _ in targets.values()}
    if len(dtypes) != 1:
        raise ValueError(f"targeted weights have mixed dtypes {sorted(map(str, dtypes))}")
    sparse, records = {}, []
    for name, (w, m) in targets.items():
        tensors, record = _encode(name, w, m, int8)
        sparse.update(tensors)
        records.append(record)
    dense = {k: v.detach() for k, v in _dense_keys(model, list(targets)).items()}
    clash = sorted(set(sparse) & set(dense)) + sorted(k for k in dense if _SEP in k)
    if clash:
        raise ValueError(f"state keys {clash} clash with the compact format's key names")
    return targets, records, sparse, dense, dtypes.pop()


# -- sizes --------------------------------------------------------------------------------------
def _component(key: str) -> str:
    return "embeddings" if _EMBEDDING.search(key) else "other"


def _report(targets, records, sparse, dense, int8) -> dict:
    comps = {c: {"dense": 0, "compact": 0} for c in ("targeted", "embeddings", "other")}
    matrices = []
    for record in records:
        name = record["name"]
        w = targets[name][0]
        prefix = f"{name}.weight{_SEP}"
        parts = {k[len(prefix):]: t.numel() * t.element_size()
                 for k, t in sparse.items() if k.startswith(prefix)}
        dense_bytes = w.numel() * w.element_size()
        compact = sum(parts.values())
        comps["targeted"]["dense"] += dense_bytes
        comps["targeted"]["compact"] += compact
        matrices.append(dict(record, dense=dense_bytes, compact=compact, parts=parts))
    for key, t in dense.items():
        c = comps[_component(key)]
        c["dense"] += t.numel() * t.element_size()
        c["compact"] += t.numel() * t.element_size()
    comps["total"] = {f: sum(c[f] for c in comps.values()) for f in ("dense", "compact")}
    for c in comps.values():
        c["ratio"] = c["dense"] / c["compact"] if c["compact"] else math.inf
    kept = sum(r["kept"] for r in records)
    numel = sum(r["shape"][0] * r["shape"][1] for r in records)
    return dict(comps, int8=int8, kept_fraction=kept / numel if numel else 0.0,
                matrices=matrices)


def size_report(model: nn.Module, *, int8: bool = False, modules=None) -> dict:
    """Bytes of ``model`` stored dense versus in the compact format, per component.

    Args:
        model: a model wrapped by mplib (its current masks) or a plain/baked one (its zeros).
        int8: count the kept values as int8 codes plus per-row float32 scales.
        modules: for a plain model, the targeted modules (patterns as in
            :class:`~mplib.PruningConfig` ``target_modules``; None: the family's default).

    Returns:
        ``targeted``, ``embeddings``, ``other`` and ``total``, each ``{"dense", "compact",
        "ratio"}`` in bytes of tensor data at the model's own dtype (fp32 for the book's
        models), ``kept_fraction`` of the targeted weights, ``int8``, and ``matrices``: one row
        per targeted matrix (``name, shape, kept, index, values, dense, compact, parts``). The
        file adds its JSON header (``save_compact`` returns ``file_bytes``). Embeddings are the
        state entries whose name mentions ``embed`` (or GPT-2's ``wte`` / ``wpe``).
    """
    targets, records, sparse, dense, _ = _plan(model, int8, modules)
    return _report(targets, records, sparse, dense, int8)


# -- saving -------------------------------------------------------------------------------------
def save_compact(model: nn.Module, path, *, int8: bool = False, modules=None) -> dict:
    """Write ``model`` in the compact format (module docstring) to the file ``path``.

    Args:
        model: wrapped by mplib (its current binary masks are stored, scores are not) or plain
            / baked (the nonzero entries of the targeted weights are kept). Not changed.
        path: the file to write (e.g. ``model.compact.safetensors``); written to ``path.tmp``
            and renamed, so a kill never leaves half a file.
        int8: store kept values as int8 with one float32 scale per row (error bound in the
            module docstring); else bit for bit in the weight's dtype.
        modules: for a plain model, which modules are targeted (None: the family's default).

    Returns:
        :func:`size_report`'s dictionary plus ``file_bytes`` and ``path``.
    """
    targets, records, sparse, dense, dtype = _plan(model, int8, modules)
    tensors = {**{k: v.to("cpu", copy=True).contiguous() for k, v in dense.items()}, **sparse}
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
                "matrices": json.dumps(records), "dtype": str(dtype).removeprefix("torch.")}
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_json_string"):
        metadata["config"] = config.to_json_string(use_diff=False)
        metadata["architecture"] = type(model).__name__
    blobs = {k: (_CODE[t.dtype], list(t.shape), _tensor_bytes(t)) for k, t in tensors.items()}
    metadata["checksum"] = _checksum(metadata, blobs)

    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    report = _report(targets, records, sparse, dense, int8)
    report.update(file_bytes=path.stat().st_size, path=str(path))
    return report


# -- reading and checking -----------------------------------------------------------------------
class _Fail:
    """Raise ``ValueError`` messages that name the file and the key."""

    def __init__(self, path):
        self.path = path

    def __call__(self, problem: str, key: str | None = None):
        where = f" key {key!r}:" if key is not None else ""
        raise ValueError(f"compact file {self.path}:{where} {problem}")


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate JSON key {k!r}")
        out[k] = v
    return out


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _read_container(path, fail: _Fail):
    """Parse and check a safetensors file: ``(metadata, {key: (code, shape, data view)})``."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        fail(f"cannot be read: {e}")
    if len(data) < 8:
        fail(f"truncated: {len(data)} bytes, shorter than the 8-byte header length")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        fail(f"header length {n} runs past the end of the file ({len(data)} bytes): truncated "
             "or corrupted")
    if n > _MAX_HEADER or n < 2:
        fail(f"header length {n} is out of range")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        fail(f"header is not valid JSON (corrupted): {e}")
    if not isinstance(header, dict):
        fail("header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        fail("no string-to-string __metadata__: not an mplib compact file")
    body = memoryview(data)[8 + n:]
    spans = []
    entries = {}
    for key, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            fail("header entry must have exactly dtype, shape and data_offsets", key)
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if code not in _DTYPES:
            fail(f"unknown dtype {code!r}", key)
        if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
            fail(f"shape {shape!r} is not a list of non-negative integers", key)
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(_is_int(o) for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
            fail(f"data_offsets {offsets!r} are not two increasing non-negative integers", key)
        size = math.prod(shape) * np.dtype(_DTYPES[code][0]).itemsize
        if offsets[1] - offsets[0] != size:
            fail(f"holds {offsets[1] - offsets[0]} bytes, but dtype {code} and shape {shape} "
                 f"need {size}", key)
        spans.append((offsets[0], offsets[1], key))
        entries[key] = (code, shape, offsets)
    end = 0
    for start, stop, key in sorted(spans):
        if start != end:
            fail(f"data starts at byte {start}, expected {end} (overlap or gap)", key)
        if stop > len(body):
            fail(f"data ends at byte {stop} of the data section, which has only {len(body)} "
                 "bytes: truncated file", key)
        end = stop
    if end != len(body):
        fail(f"{len(body) - end} bytes after the last tensor (corrupted)")
    tensors = {k: (code, shape, body[o[0]:o[1]]) for k, (code, shape, o) in entries.items()}
    return meta, tensors


def _array(blob, fail: _Fail, key: str) -> np.ndarray:
    code, shape, data = blob
    arr = np.frombuffer(data, dtype=_DTYPES[code][0]).reshape(shape)
    if code == "BOOL" and arr.size and arr.max() > 1:
        fail("bool tensor holds bytes other than 0 and 1", key)
    return arr


def _to_torch(blob, fail: _Fail, key: str) -> torch.Tensor:
    code = blob[0]
    arr = _array(blob, fail, key).copy()
    if code == "BOOL":
        return torch.from_numpy(arr.astype(bool))
    t = torch.from_numpy(arr)
    return t.view(torch.bfloat16) if code == "BF16" else t


def _records(meta: dict, fail: _Fail) -> list[dict]:
    if meta.get("format") != FORMAT:
        fail(f"metadata format is {meta.get('format')!r}, not {FORMAT!r}: not an mplib compact "
             "file")
    version = meta.get("format_version")
    if version != str(FORMAT_VERSION):
        fail(f"format_version {version!r}: this mplib reads version {FORMAT_VERSION}")
    for field in ("matrices", "dtype", "checksum"):
        if field not in meta:
            fail(f"metadata has no {field!r}")
    try:
        records = json.loads(meta["matrices"], object_pairs_hook=_no_duplicates)
    except ValueError as e:
        fail(f"metadata 'matrices' is not valid JSON: {e}")
    if not isinstance(records, list):
        fail("metadata 'matrices' is not a list")
    names = set()
    for r in records:
        ok = (isinstance(r, dict) and set(r) == {"name", "shape", "kept", "index", "values"}
              and isinstance(r["name"], str) and isinstance(r["shape"], list)
              and len(r["shape"]) == 2 and all(_is_int(s) and s > 0 for s in r["shape"])
              and _is_int(r["kept"]) and r["index"] in ("bitmask", "csr8", "csr16")
              and r["values"] in _VALUE_KINDS)
        if not ok:
            fail(f"metadata 'matrices' entry {r!r} is malformed")
        if not 0 <= r["kept"] <= r["shape"][0] * r["shape"][1]:
            fail(f"kept={r['kept']} is outside 0..{r['shape'][0] * r['shape'][1]}",
                 r["name"] + ".weight")
        if r["name"] in names:
            fail(f"metadata 'matrices' lists {r['name']!r} twice")
        names.add(r["name"])
    if meta["dtype"] not in _VALUE_KINDS or meta["dtype"] == "int8":
        fail(f"metadata dtype {meta['dtype']!r} is not a float dtype")
    return records


def _skeleton_from_config(meta: dict, config, fail: _Fail):
    """``(class, config)`` for a model rebuilt from the file's (or the given) config."""
    import transformers

    arch = meta.get("architecture")
    if arch is None or (config is None and "config" not in meta):
        fail("stores no transformers config and architecture (a plain torch module): pass a "
             "skeleton model, load_compact(path, model)")
    cls = getattr(transformers, arch, None) if arch.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        fail(f"architecture {arch!r} is not a transformers model class")
    if config is None:
        try:
            d = json.loads(meta["config"])
            config = transformers.CONFIG_MAPPING[d["model_type"]].from_dict(d)
        except Exception as e:  # noqa: BLE001 - any failure here is a bad config
            fail(f"metadata 'config' does not make a transformers config: {e!r}")
    return cls, config


def _expect(records, dense_shapes, weight_info, fail: _Fail) -> dict[str, tuple[str, list]]:
    """``{key: (dtype code, shape)}`` the file must hold, exactly."""
    expected = {k: v for k, v in dense_shapes.items()}
    for r in records:
        name, (rows, cols), kept = r["name"], r["shape"], r["kept"]
        key = f"{name}.weight"
        if name not in weight_info:
            fail("is not a Linear / Conv1D weight of this model", key)
        w_code, w_shape = weight_info[name]
        if list(w_shape) != [rows, cols]:
            fail(f"the model's weight has shape {list(w_shape)}, the file says {[rows, cols]}",
                 key)
        if r["values"] != "int8" and _VALUE_KINDS[r["values"]] != w_code:
            fail(f"values are {r['values']}, the model's weight is {w_code}", key)
        p = key + _SEP
        expected[p + "values"] = (_VALUE_KINDS[r["values"]], [kept])
        if r["values"] == "int8":
            expected[p + "scales"] = ("F32", [rows])
        if r["index"] == "bitmask":
            expected[p + "bitmask"] = ("U8", [-(-rows * cols // 8)])
        else:
            segments = -(-cols // _SEGMENT[r["index"]])
            expected[p + "cols"] = (_COLS_DTYPE[r["index"]], [kept])
            expected[p + "rowptr"] = (_csr_pointer_code(kept), [rows * segments + 1])
    return expected


def _decode(record, tensors, fail: _Fail) -> np.ndarray:
    """Check one matrix's positions and return them as sorted flat indices (int64)."""
    name, (rows, cols), kept = record["name"], record["shape"], record["kept"]
    p = f"{name}.weight{_SEP}"
    if record["index"] == "bitmask":
        key = p + "bitmask"
        bits = np.unpackbits(_array(tensors[key], fail, key), bitorder="little")
        if bits[rows * cols:].any():
            fail(f"padding bits after entry {rows * cols} are set", key)
        flat = np.flatnonzero(bits[:rows * cols])
        if flat.size != kept:
            fail(f"has {flat.size} bits set but {kept} values", key)
        return flat.astype(np.int64)
    width = _SEGMENT[record["index"]]
    segments = -(-cols // width)
    key = p + "rowptr"
    ptr = _array(tensors[key], fail, key).astype(np.int64)
    if ptr[0] != 0:
        fail(f"row pointers start at {ptr[0]}, not 0", key)
    counts = np.diff(ptr)
    if (counts < 0).any():
        i = int(np.flatnonzero(counts < 0)[0])
        fail(f"row pointers are not monotone: pointer {i + 1} ({ptr[i + 1]}) < pointer {i} "
             f"({ptr[i]})", key)
    if ptr[-1] != kept:
        fail(f"row pointers end at {ptr[-1]}, not at the {kept} kept entries", key)
    seg_width = np.full(segments, width, dtype=np.int64)
    seg_width[-1] = cols - width * (segments - 1)
    seg_width = np.tile(seg_width, rows)
    if (counts > seg_width).any():
        i = int(np.flatnonzero(counts > seg_width)[0])
        fail(f"segment {i} holds {counts[i]} entries, more than its {seg_width[i]} columns", key)
    key = p + "cols"
    col = _array(tensors[key], fail, key).astype(np.int64)
    seg = np.repeat(np.arange(rows * segments), counts)
    bad = col >= seg_width[seg]
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        fail(f"column index {col[i]} at entry {i} is out of range (segment of "
             f"{seg_width[seg[i]]} columns, row length {cols})", key)
    same = seg[1:] == seg[:-1]
    unordered = same & (col[1:] <= col[:-1])
    if unordered.any():
        i = int(np.flatnonzero(unordered)[0])
        fail(f"column indices not strictly increasing within a row at entry {i + 1}", key)
    row, part = seg // segments, seg % segments
    return row * cols + part * width + col


def _values(record, tensors, flat, fail: _Fail, w_dtype: torch.dtype) -> torch.Tensor:
    name, cols = record["name"], record["shape"][1]
    p = f"{name}.weight{_SEP}"
    if record["values"] != "int8":
        return _to_torch(tensors[p + "values"], fail, p + "values")
    codes = _array(tensors[p + "values"], fail, p + "values")
    if codes.size and codes.min() < -127:
        fail("int8 code -128 is outside the symmetric range [-127, 127]", p + "values")
    scales = _array(tensors[p + "scales"], fail, p + "scales")
    bad = ~(np.isfinite(scales) & (scales > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        fail(f"scale of row {i} is {scales[i]}: scales must be finite and > 0", p + "scales")
    q = torch.from_numpy(codes.astype(np.float32))
    s = torch.from_numpy(scales.astype(np.float32))[torch.from_numpy(flat // cols)]
    return (q * s).to(w_dtype)


def load_compact(path, model=None, *, with_masks: bool = False):
    """Read a file written by :func:`save_compact`, checking everything first.

    Args:
        path: the compact file. Treated as untrusted: any inconsistency raises ``ValueError``
            naming the key and the problem, before the model is built or changed.
        model: None to rebuild the transformers model from the config and class stored in the
            file; a transformers ``PretrainedConfig`` to use instead of the stored one (same
            class); or a plain ``nn.Module`` skeleton of the right architecture (any weights;
            dtypes must match the file), filled in place -- the only way for a plain torch
            module. A rebuilt model whose config says ``mplib_pooling="mean"`` is mean-pooled
            again (:func:`mplib.lab.models.use_mean_pooling`).
        with_masks: also return ``{module name: bool mask}`` of the targeted matrices.

    Returns:
        The plain (baked) model -- rebuilt ones in eval mode -- or ``(model, masks)``.
    """
    fail = _Fail(path)
    meta, tensors = _read_container(path, fail)
    records = _records(meta, fail)

    built = None
    if model is not None and not isinstance(model, nn.Module) and not hasattr(model, "to_dict"):
        raise TypeError(f"model must be None, a transformers config or an nn.Module skeleton, "
                        f"got {type(model).__name__}")
    if isinstance(model, nn.Module):
        if masked_layers(model):
            raise ValueError("load_compact fills a plain model; this one is wrapped by mplib "
                             "(call mplib.unwrap or mplib.bake on it first)")
        skeleton = model
    else:
        cls, config = _skeleton_from_config(meta, model, fail)
        dtype = getattr(torch, meta["dtype"])
        try:
            with torch.device("meta"):
                skeleton = cls(config).to(dtype)
        except Exception as e:  # noqa: BLE001 - a config the class rejects
            fail(f"the stored config does not build {cls.__name__}: {e!r}")
        built = (cls, config, dtype)

    # what the model expects: its state minus the sparse weights, aliases stored once
    weight_info = {n: (_CODE.get(m.weight.dtype), list(m.weight.shape))
                   for n, m in skeleton.named_modules() if n and is_supported(m)}
    alias = _aliases(skeleton)
    sparse_weights = {f"{r['name']}.weight" for r in records}
    state = skeleton.state_dict()
    dense_shapes = {k: (_CODE.get(t.dtype), list(t.shape)) for k, t in state.items()
                    if k not in alias and k not in sparse_weights}
    expected = _expect(records, dense_shapes, weight_info, fail)
    for key in expected:
        if key not in tensors:
            fail("is missing from the file", key)
    for key in tensors:
        if key not in expected:
            fail("is not a tensor this model stores (unknown key)", key)
    for key, (code, shape) in expected.items():
        if tensors[key][0] != code:
            fail(f"has dtype {tensors[key][0]}, expected {code}", key)
        if tensors[key][1] != shape:
            fail(f"has shape {tensors[key][1]}, expected {shape}", key)

    # contents: positions, codes, scales; then the checksum over everything
    decoded = {r["name"]: _decode(r, tensors, fail) for r in records}
    values = {r["name"]: _values(r, tensors, decoded[r["name"]], fail,
                                 _DTYPES[weight_info[r["name"]][0]][1]) for r in records}
    if _checksum(meta, tensors) != meta["checksum"]:
        fail("checksum does not match the contents: the file is corrupted (or was edited)")

    if built is not None:
        cls, config, dtype = built
        with torch.random.fork_rng(devices=[]):  # its random init is overwritten: spare the RNG
            model = cls(config).to(dtype)
        model.eval()
        if getattr(config, "mplib_pooling", None) == "mean":
            from .lab.models import use_mean_pooling

            use_mean_pooling(model)
    new_state = {k: _to_torch(tensors[k], fail, k) for k in dense_shapes}
    masks = {}
    for r in records:
        name, (rows, cols) = r["name"], r["shape"]
        mask = torch.zeros(rows * cols, dtype=torch.bool)
        weight = torch.zeros(rows * cols, dtype=values[name].dtype)
        index = torch.from_numpy(decoded[name])
        mask[index] = True
        weight[index] = values[name]
        masks[name] = mask.reshape(rows, cols)
        new_state[f"{name}.weight"] = weight.reshape(rows, cols)
    for key, source in alias.items():
        new_state[key] = new_state[source]
    model.load_state_dict(new_state, strict=True)
    return (model, masks) if with_masks else model
