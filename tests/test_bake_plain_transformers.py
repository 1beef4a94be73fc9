"""A baked model's ``save_pretrained`` folder loads in plain transformers, in a process where
``import mplib`` fails (a fake ``mplib`` package that raises is first on ``sys.path``), and gives
the same logits, bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
from _bake_helpers import FAMILIES, pruned_and_baked
from _core_helpers import make_batch, outputs
from safetensors.torch import load_file, save_file

PLAIN = textwrap.dedent("""
    import sys
    try:
        import mplib
    except ImportError as e:
        assert "blocked" in str(e), e
    else:
        raise SystemExit("mplib was importable")
    sys.modules.pop("mplib", None)
    import torch, transformers
    from safetensors.torch import load_file, save_file
    torch.set_num_threads(1)
    root = sys.argv[1]
    logits = {}
    for family in sys.argv[2:]:
        path = f"{root}/{family}"
        config = transformers.AutoConfig.from_pretrained(path)
        cls = getattr(transformers, config.architectures[0])
        model = cls.from_pretrained(path).eval()
        ids = load_file(f"{root}/batch_{family}.safetensors")["input_ids"]
        with torch.no_grad():
            logits[family] = model(input_ids=ids).logits.contiguous()
    assert not any(m == "mplib" or m.startswith("mplib.") for m in sys.modules)
    save_file(logits, f"{root}/plain_logits.safetensors")
""")


def test_saved_folder_loads_in_plain_transformers_without_mplib(tmp_path):
    root = tmp_path / "baked"
    expected = {}
    for family in FAMILIES:
        model, _ = pruned_and_baked(family)
        model.save_pretrained(root / family)
        expected[family] = outputs(model, make_batch(family))
        save_file({"input_ids": make_batch(family)["input_ids"]},
                  str(root / f"batch_{family}.safetensors"))
    blocker = tmp_path / "blocker" / "mplib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("mplib is blocked in this test")\n')
    env = dict(os.environ, PYTHONPATH=str(blocker.parent))
    result = subprocess.run(
        [sys.executable, "-c", PLAIN, str(root), *FAMILIES], capture_output=True, text=True,
        timeout=300, cwd=blocker.parent, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    plain = load_file(str(root / "plain_logits.safetensors"))
    for family in FAMILIES:
        assert torch.equal(plain[family], expected[family]), family
