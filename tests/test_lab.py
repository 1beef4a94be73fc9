"""`make lab` opens the chapters in JupyterLab with the kernel environment CI uses (issue 9)."""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("_mplib_lab", ROOT / "tools" / "lab.py")
lab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lab)


def test_kernel_environment_is_the_ci_one():
    cmd, env = lab.lab_command([], {"PATH": "/bin", "MPLIB_PROFILE": ""})
    for key, value in lab.nbenv.KERNEL_ENV.items():
        assert env[key] == value, key
    assert cmd[1] == "lab" and f"--notebook-dir={ROOT}" in cmd
    assert env["PATH"] == "/bin"


def test_explicit_profile_is_kept_and_arguments_pass_through():
    cmd, env = lab.lab_command(["--port", "8899"], {"MPLIB_PROFILE": "cpu", "OMP_NUM_THREADS": "8"})
    assert env["MPLIB_PROFILE"] == "cpu"
    assert env["OMP_NUM_THREADS"] == "1"  # the stored outputs were made with one thread
    assert cmd[cmd.index("--port") + 1] == "8899"


def test_jupyterlab_is_the_pinned_version():
    pin = re.search(r"^jupyterlab==(\S+)$", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert pin, "requirements.txt must pin jupyterlab"
    jupyter = Path(sys.executable).with_name("jupyter")
    out = subprocess.run([str(jupyter), "lab", "--version"], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == pin.group(1)


@pytest.mark.slow
def test_server_serves_the_chapters(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd, env = lab.lab_command(["--no-browser", f"--port={port}", "--IdentityProvider.token=t",
                                "--ServerApp.ip=127.0.0.1"], {"PATH": "/usr/bin:/bin",
                                                              "HOME": str(tmp_path)})
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/api"
        for _ in range(120):
            try:
                specs = json.load(urllib.request.urlopen(f"{base}/kernelspecs?token=t", timeout=2))
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("jupyter lab did not answer within 60 s")
        assert "python3" in specs["kernelspecs"]
        nb = json.load(urllib.request.urlopen(
            f"{base}/contents/book/03_fine_pruning.ipynb?content=0&token=t", timeout=5))
        assert nb["type"] == "notebook"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
