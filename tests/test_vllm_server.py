"""The README's `vllm serve` command for TRAIL, run as written: vLLM's OpenAI server with
TRAIL's scheduler flags on a tiny model, served to the official `openai` client over
127.0.0.1, the probe installed over HTTP. Skipped unless vLLM is installed (CI's vLLM job).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (CI runs this in its vLLM venv)")
openai = pytest.importorskip("openai")

from trail import Probe  # noqa: E402
from trail.integrations.vllm.tiny import build_tiny_llama  # noqa: E402

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
START_S = 240  # the server's start on 2 busy cores, at most


def readme_flags() -> list[str]:
    """The flags of the README's `vllm serve` command (from --scheduler-cls to the KV size)."""
    text = " ".join(README.read_text().split())
    m = re.search(r"`(--scheduler-cls trail\.integrations\.vllm\.scheduler\.\S+ .*?"
                  r"--kv-cache-memory-bytes \d+)`", text)
    assert m, "README: the vllm serve flags (--scheduler-cls ... --kv-cache-memory-bytes N)"
    return shlex.split(m.group(1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_readme_server_command_serves_openai_clients(tmp_path: pathlib.Path) -> None:
    model = build_tiny_llama(tmp_path / "tiny")
    Probe(128, layer=1).save(tmp_path / "probe")
    flags = readme_flags()
    i = flags.index("--additional-config")
    trail = json.loads(flags[i + 1])["trail"]
    assert trail["policy"] == "TRAIL"
    trail["stats_path"] = str(tmp_path / "stats.json")  # to read the scheduler's counters
    flags[i + 1] = json.dumps({"trail": trail})
    port = free_port()
    env = dict(os.environ, VLLM_SERVER_DEV_MODE="1", HF_HUB_OFFLINE="1",
               VLLM_LOGGING_LEVEL="WARNING", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--max-model-len", "256", "--block-size", "32", "--max-num-seqs", "2", *flags]
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none",
                               timeout=60, max_retries=0)
        deadline = time.monotonic() + START_S
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(2)
        import httpx

        r = httpx.post(f"http://127.0.0.1:{port}/collective_rpc", timeout=60,
                       json={"method": "trail_install_probe",
                             "args": [str(tmp_path / "probe")]})
        assert r.status_code == 200, r.text

        def complete(k: int) -> str:
            out = client.completions.create(
                model=str(model), prompt=f"hello {k} " * (1 + k), max_tokens=12,
                temperature=0.0, extra_body={"vllm_xargs": {"trail_predicted_len": 3.0 + k}})
            return out.choices[0].text

        with ThreadPoolExecutor(4) as pool:
            texts = list(pool.map(complete, range(6)))
        assert all(isinstance(t, str) for t in texts)
        deadline = time.monotonic() + 60
        while not (tmp_path / "stats.json").exists():  # written every 50 steps
            assert time.monotonic() < deadline, "no stats file"
            complete(0)
        stats = json.loads((tmp_path / "stats.json").read_text())
        assert stats["stats"]["steps"] >= 50 and stats["stats"]["predictions"] > 0
        assert not stats["faults"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
