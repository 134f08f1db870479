"""Kill the server (SIGKILL) while clients post feedback: every acknowledged row survives."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from bridgetune.serve.store import FeedbackStore


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(model_dir: Path, database: Path, port: int) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "bridgetune.cli", "serve", str(model_dir),
        "--port", str(port), "--feedback-db", str(database),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stderr.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.kill()
    raise AssertionError("the server did not become ready in 60 s")


def _post_until_refused(url: str, prefix: str, acknowledged: list[str]) -> None:
    with httpx.Client(timeout=5) as client:
        for number in range(100_000):
            feedback_id = f"{prefix}-{number}"
            body = {"text": f"message {number}", "label": "negative", "id": feedback_id}
            try:
                response = client.post(f"{url}/v1/feedback", json=body)
            except httpx.TransportError:
                return
            if response.is_success:
                acknowledged.append(feedback_id)


def test_acknowledged_feedback_survives_sigkill(served_classifier, tmp_path):
    database = tmp_path / "feedback.db"
    port = _free_port()
    server = _start(served_classifier, database, port)
    acknowledged: list[str] = []
    clients = [
        threading.Thread(
            target=_post_until_refused,
            args=(f"http://127.0.0.1:{port}", f"c{index}", acknowledged),
        )
        for index in range(6)
    ]
    try:
        for client in clients:
            client.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.send_signal(signal.SIGKILL)  # mid-stream: requests are in flight
        server.wait(timeout=10)
    finally:
        server.kill()
        for client in clients:
            client.join(timeout=30)
    assert len(acknowledged) >= 60
    stored = {row.id for row in FeedbackStore(database).rows()}
    assert set(acknowledged) <= stored, f"lost: {sorted(set(acknowledged) - stored)[:5]}"

    restarted = _start(served_classifier, database, port)
    try:
        body = {"text": "after restart", "label": "positive", "id": "after"}
        assert httpx.post(f"http://127.0.0.1:{port}/v1/feedback", json=body).status_code == 201
    finally:
        restarted.terminate()
        restarted.wait(timeout=30)
    assert len(list(FeedbackStore(database).rows())) == len(stored) + 1
