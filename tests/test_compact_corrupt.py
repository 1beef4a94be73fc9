"""Loading untrusted compact files: every corruption is a ValueError naming the key and the
problem, before any tensor is built -- never a crash, never a silently wrong model.

Most fixtures are *resealed*: the edit is made, then the checksum is recomputed (by this file's
own implementation of the documented rule), so the error must come from the structural check
and not merely from the checksum."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from _core_helpers import make_batch, make_model, outputs
from safetensors import safe_open
from safetensors.torch import save_file

import mplib
from mplib.compact import load_compact, save_compact

CSR = "bert.encoder.layer.0.output.dense.weight::"  # 16 x 32 at 2 % kept: csr8
BITS = "bert.encoder.layer.0.attention.self.query.weight::"  # 16 x 16: bitmask
CODES = {torch.float32: "F32", torch.float64: "F64", torch.int8: "I8", torch.uint8: "U8",
         torch.uint16: "U16", torch.int32: "I32", torch.int64: "I64"}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A tiny BERT, magnitude 2 %, int8: bitmask and csr8 matrices, scales, dense rest."""
    model = make_model("bert")
    mplib.wrap(model, mplib.PruningConfig(method="magnitude", keep_ratio=0.02))
    path = tmp_path_factory.mktemp("compact") / "good.safetensors"
    report = save_compact(model, path, int8=True)
    assert {m["index"] for m in report["matrices"]} == {"bitmask", "csr8"}
    return path


def _read(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def _seal(meta: dict, tensors: dict) -> str:
    """The documented checksum: SHA-256 over the sorted other metadata, then per sorted key its
    [name, dtype, shape] as JSON and its bytes."""
    h = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "checksum"},
                                  sort_keys=True).encode())
    for key in sorted(tensors):
        t = tensors[key]
        h.update(json.dumps([key, CODES[t.dtype], list(t.shape)]).encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + h.hexdigest()


def _craft(src, dst, edit, reseal=True):
    tensors, meta = _read(src)
    edit(tensors, meta)
    if reseal:
        meta["checksum"] = _seal(meta, tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dst), metadata=meta)
    return dst


def test_the_good_file_loads_and_resealing_follows_the_documented_rule(good, tmp_path):
    tensors, meta = _read(good)
    assert _seal(meta, tensors) == meta["checksum"]
    model = load_compact(_craft(good, tmp_path / "same.safetensors", lambda t, m: None))
    assert isinstance(model, type(make_model("bert")))
    outputs(model, make_batch("bert"))


def _set(key, fn):
    def edit(tensors, meta):
        tensors[key] = fn(tensors[key].clone())
    return edit


def _u16(key, fn):
    """Edit a uint16 tensor (few torch ops support uint16) through int32."""
    return _set(key, lambda t: fn(t.to(torch.int32)).to(torch.uint16))


def _meta(field, value):
    def edit(tensors, meta):
        if value is None:
            del meta[field]
        else:
            meta[field] = value
    return edit


def _matrices(fn):
    def edit(tensors, meta):
        records = json.loads(meta["matrices"])
        fn(records)
        meta["matrices"] = json.dumps(records)
    return edit


def _first(records):
    return records[0]


CORRUPTIONS = {
    "wrong dtype of codes": (_set(CSR + "values", lambda t: t.view(torch.uint8)),
                             CSR + "values", "has dtype U8, expected I8"),
    "wrong dtype of pointers": (_set(CSR + "rowptr", lambda t: t.to(torch.int32)),
                                CSR + "rowptr", "has dtype I32, expected U16"),
    "wrong dtype of a dense tensor": (
        _set("classifier.weight", lambda t: t.double()), "classifier.weight",
        "has dtype F64, expected F32"),
    "value count": (_set(CSR + "values", lambda t: torch.cat([t, t[:1]])), CSR + "values",
                    r"has shape \[12\], expected \[11\]"),
    "dense shape": (_set("classifier.bias", lambda t: t[:2]), "classifier.bias", "has shape"),
    "column out of range": (_set(CSR + "cols", lambda t: t.index_fill_(0, torch.tensor([3]), 40)),
                            CSR + "cols", "column index 40 at entry 3 is out of range"),
    "columns not increasing": (_set(CSR + "cols", lambda t: t.fill_(5)), CSR + "cols",
                               "not strictly increasing"),
    "row pointer not monotone": (
        _u16(CSR + "rowptr", lambda t: t.index_fill_(0, torch.tensor([1]), 9)),
        CSR + "rowptr", "not monotone"),
    "row pointers end elsewhere": (_u16(CSR + "rowptr", lambda t: t.index_fill_(
        0, torch.tensor([16]), 10)), CSR + "rowptr", "end at 10, not at the 11"),
    "row pointers do not start at 0": (_u16(CSR + "rowptr", lambda t: t + 1), CSR + "rowptr",
                                       "start at 1"),
    "bitmask count": (_set(BITS + "bitmask", lambda t: t.fill_(255)), BITS + "bitmask",
                      "256 bits set but 6 values"),
    "NaN scale": (_set(CSR + "scales", lambda t: t.index_fill_(0, torch.tensor([2]), torch.nan)),
                  CSR + "scales", "scale of row 2 is nan"),
    "zero scale": (_set(BITS + "scales", lambda t: t.index_fill_(0, torch.tensor([0]), 0.0)),
                   BITS + "scales", "finite and > 0"),
    "infinite scale": (_set(BITS + "scales", lambda t: t.fill_(torch.inf)), BITS + "scales",
                       "finite and > 0"),
    "int8 code -128": (_set(BITS + "values", lambda t: t.fill_(-128)), BITS + "values",
                       r"outside the symmetric range"),
    "missing dense key": (lambda t, m: t.pop("classifier.bias"), "classifier.bias", "missing"),
    "missing scales": (lambda t, m: t.pop(CSR + "scales"), CSR + "scales", "missing"),
    "missing sparse weight's index": (lambda t, m: t.pop(BITS + "bitmask"), BITS + "bitmask",
                                      "missing"),
    "extra key": (lambda t, m: t.update(evil=torch.zeros(3)), "evil", "unknown key"),
    "dense copy of a sparse weight": (
        lambda t, m: t.update({"bert.encoder.layer.0.output.dense.weight": torch.zeros(16, 32)}),
        "bert.encoder.layer.0.output.dense.weight", "unknown key"),
    "no format": (_meta("format", None), None, "not an mplib compact file"),
    "future version": (_meta("format_version", "2"), None, "format_version '2'"),
    "bad architecture": (_meta("architecture", "os.system"), None,
                         "not a transformers model class"),
    "missing checksum": (_meta("checksum", None), None, "no 'checksum'", False),
    "matrices not JSON": (_meta("matrices", "[{"), None, "'matrices' is not valid JSON"),
    "kept beyond the matrix": (_matrices(lambda r: _first(r).update(kept=10_000)),
                               "bert.encoder.layer.0.attention.self.query.weight", "outside"),
    "malformed record": (_matrices(lambda r: _first(r).update(index="zip")), None, "malformed"),
    "record of no module": (_matrices(lambda r: _first(r).update(name="bert.nowhere")),
                            "bert.nowhere.weight", "not a Linear"),
    "record shape": (_matrices(lambda r: _first(r).update(shape=[16, 17])),
                     "bert.encoder.layer.0.attention.self.query.weight", "has shape"),
    "huge config": (lambda t, m: m.update(config=json.dumps(
        dict(json.loads(m["config"]), vocab_size=10**11))),
        "bert.embeddings.word_embeddings.weight", r"expected \[100000000000, 16\]"),
    "config of another family": (lambda t, m: m.update(config=json.dumps(
        dict(json.loads(m["config"]), model_type="no-such-model"))), None,
        "does not make a transformers config"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_each_corruption_is_a_specific_error(good, tmp_path, name):
    edit, key, message, *flags = CORRUPTIONS[name]
    reseal = flags[0] if flags else True
    bad = _craft(good, tmp_path / "bad.safetensors", edit, reseal=reseal)
    where = f"key {key!r}: " if key else ""
    with pytest.raises(ValueError, match=f"{where.replace('[', '.').replace(']', '.')}.*"
                                         f"{message}"):
        load_compact(bad)


def test_an_edited_value_fails_the_checksum(good, tmp_path):
    bad = _craft(good, tmp_path / "bad.safetensors",
                 _set(CSR + "values", lambda t: t.index_fill_(0, torch.tensor([0]), 7)),
                 reseal=False)
    with pytest.raises(ValueError, match="checksum does not match"):
        load_compact(bad)


def _bytes_at(good, tmp_path, positions, xor):
    data = good.read_bytes()
    failures = []
    for i in positions:
        corrupt = bytearray(data)
        corrupt[i] ^= xor
        path = tmp_path / "flip.safetensors"
        path.write_bytes(bytes(corrupt))
        try:
            load_compact(path)
        except ValueError:
            continue
        except Exception as e:  # noqa: BLE001 - a crash is what this test looks for
            failures.append((i, repr(e)))
        else:
            failures.append((i, "loaded silently"))
    return failures


def test_flipped_bytes_in_the_header_and_data(good, tmp_path):
    data = good.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = list(range(0, 8 + n, max(1, (8 + n) // 90)))  # the length field, JSON, padding
    body = list(range(8 + n, len(data), max(1, (len(data) - 8 - n) // 30)))
    failures = _bytes_at(good, tmp_path, header, 0x01) + _bytes_at(good, tmp_path, body, 0x10)
    failures += _bytes_at(good, tmp_path, header[::9], 0x80)  # not UTF-8 any more
    assert not failures


@pytest.mark.parametrize("cut", ["empty", "4", "8", "half header", "header", "half", "-1"])
def test_truncated_file(good, tmp_path, cut):
    data = good.read_bytes()
    n = int.from_bytes(data[:8], "little")
    size = {"empty": 0, "4": 4, "8": 8, "half header": 8 + n // 2, "header": 8 + n,
            "half": len(data) // 2, "-1": len(data) - 1}[cut]
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[:size])
    with pytest.raises(ValueError, match="truncated"):
        load_compact(path)


def test_header_level_problems(good, tmp_path):
    data = good.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])

    def write(obj_bytes, body=data[8 + n:]):
        raw = obj_bytes
        path = tmp_path / "h.safetensors"
        path.write_bytes(len(raw).to_bytes(8, "little") + raw + body)
        return path

    dup = data[8:8 + n].replace(b'{"__metadata__"', b'{"__metadata__":{},"__metadata__"', 1)
    with pytest.raises(ValueError, match="duplicate JSON key '__metadata__'"):
        load_compact(write(dup))
    key = next(k for k in header if k != "__metadata__")
    moved = dict(header)
    moved[key] = dict(header[key], data_offsets=[o + 1 for o in header[key]["data_offsets"]])
    with pytest.raises(ValueError, match=f"key {key!r}: data"):
        load_compact(write(json.dumps(moved).encode()))
    with pytest.raises(ValueError, match="bytes after the last tensor"):
        load_compact(write(data[8:8 + n], data[8 + n:] + b"\0"))
    odd = dict(header)
    odd[key] = dict(header[key], dtype="F128")
    with pytest.raises(ValueError, match="unknown dtype 'F128'"):
        load_compact(write(json.dumps(odd).encode()))
    with pytest.raises(ValueError, match="not a JSON object"):
        load_compact(write(b"[1, 2, 3]"))
    with pytest.raises(ValueError, match="no string-to-string __metadata__"):
        load_compact(write(json.dumps({k: v for k, v in header.items()
                                       if k != "__metadata__"}).encode()))


def test_files_of_other_kinds_are_refused(tmp_path):
    model = make_model("bert")
    model.save_pretrained(tmp_path / "hf")  # a plain safetensors checkpoint
    with pytest.raises(ValueError, match="not an mplib compact file"):
        load_compact(tmp_path / "hf" / "model.safetensors")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "pickle.pt")  # never unpickled
    with pytest.raises(ValueError, match="compact file .*pickle.pt"):
        load_compact(tmp_path / "pickle.pt")
    with pytest.raises(ValueError, match="cannot be read"):
        load_compact(tmp_path / "nowhere.safetensors")


def test_a_skeleton_that_does_not_fit_is_refused(good, tmp_path):
    with pytest.raises(ValueError, match="query.weight': is not a Linear / Conv1D weight"):
        load_compact(good, make_model("distilbert"))
    wrapped = make_model("bert")
    mplib.wrap(wrapped, mplib.PruningConfig(method="magnitude", keep_ratio=0.5))
    with pytest.raises(ValueError, match="wrapped by mplib"):
        load_compact(good, wrapped)
    with pytest.raises(TypeError, match="model must be None"):
        load_compact(good, "bert")
    skeleton = make_model("bert")
    before = {k: v.clone() for k, v in skeleton.state_dict().items()}
    bad = _craft(good, tmp_path / "x.safetensors",
                 _set(CSR + "cols", lambda t: t.index_fill_(0, torch.tensor([0]), 99)))
    with pytest.raises(ValueError, match="out of range"):
        load_compact(bad, skeleton)
    for k, v in skeleton.state_dict().items():  # nothing was written into it
        assert torch.equal(v, before[k]), k
