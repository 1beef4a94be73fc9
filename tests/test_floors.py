"""The no-encoder floor: ``load_encoder(num_layers=0, pooling="mean")`` is a bag of input
embeddings under the head. Checked against the same computation written out by hand on a tiny
local BERT (nothing downloads)."""

import pytest
import torch
from transformers import BertConfig, BertModel

from mplib.lab import models as M


@pytest.fixture
def tiny_bert(tmp_path):
    words = "[PAD] [UNK] [CLS] [SEP] [MASK] a good bad film plot ##s".split()
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertModel(config).save_pretrained(tmp_path)
    return tmp_path


def test_zero_layers_is_a_bag_of_embeddings(tiny_bert):
    model, tok = M.load_encoder(tiny_bert, num_labels=3, num_layers=0, pooling="mean", seed=1)
    assert model.config.num_hidden_layers == 0 and len(model.bert.encoder.layer) == 0
    batch = tok(["a good film", "bad plots plots plots"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
        # by hand: embeddings (word + position + type, LayerNorm), masked mean, pooler, head
        emb = model.bert.embeddings(input_ids=batch["input_ids"],
                                    token_type_ids=batch["token_type_ids"])
        m = batch["attention_mask"].unsqueeze(-1).to(emb.dtype)
        bag = (emb * m).sum(1) / m.sum(1)
        pooled = torch.tanh(model.bert.pooler.dense(bag))
        expected = model.classifier(pooled)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)


def test_zero_layers_trains_and_bad_counts_fail(tiny_bert):
    model, tok = M.load_encoder(tiny_bert, num_labels=2, num_layers=0, pooling="mean")
    batch = tok(["a good film", "bad plot"], padding=True, return_tensors="pt")
    model.train()
    out = model(**batch, labels=torch.tensor([1, 0]))
    out.loss.backward()
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"num_layers must be in 0\.\.2"):
        M.load_encoder(tiny_bert, num_layers=3)
    with pytest.raises(ValueError, match=r"num_layers must be in 0\.\.2"):
        M.load_encoder(tiny_bert, num_layers=-1)
