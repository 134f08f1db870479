"""The real server process: killed with SIGKILL while clients post feedback, every acknowledged
row survives; with several workers, metrics are shared and a reload reaches every worker."""

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
import pytest

from bridgetune.lifecycle.store import FeedbackStore


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(model_dir: Path, database: Path, port: int, *options: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "bridgetune.cli", "serve", str(model_dir),
        "--port", str(port), "--feedback-db", str(database), *options,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    ready = 0  # several answers in a row: with workers, each process loads its own model
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stderr.read()
        try:
            ok = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            ok = False
        ready = ready + 1 if ok else 0
        if ready == 10:
            return server
        time.sleep(0.05 if ok else 0.1)
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


@pytest.mark.slow  # a served process killed and restarted (~12 s)
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


@pytest.mark.slow  # two uvicorn worker processes start, reload and stop (~10 s)
def test_workers_share_metrics_and_follow_a_reload(served_classifier, served_ner, tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = _start(
        served_classifier, tmp_path / "fb.db", port, "--workers", "2", "--admin-key", "root"
    )
    try:
        answered, deadline = 0, time.monotonic() + 30
        while answered < 6 and time.monotonic() < deadline:  # 503 only while a worker loads
            status = httpx.post(f"{url}/v1/predict", json={"texts": ["hi"]}).status_code
            assert status in (200, 503)
            answered += status == 200
        metrics = httpx.get(f"{url}/metrics").text
        assert "bridgetune_texts_total 6.0" in metrics  # summed over both workers
        reload = httpx.post(
            f"{url}/admin/reload",
            json={"model_dir": str(served_ner)},
            headers={"X-API-Key": "root"},
            timeout=60,
        )
        assert reload.status_code == 200, reload.text
        tasks: set[str] = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the other worker follows within a second or two
            answers = [
                httpx.post(f"{url}/v1/predict", json={"texts": ["bob visited paris"]})
                for _ in range(8)
            ]
            assert all(a.status_code == 200 for a in answers)
            tasks = {a.json()["task"] for a in answers}
            if tasks == {"ner"}:
                break
            time.sleep(0.5)
        assert tasks == {"ner"}
    finally:
        server.terminate()
        server.wait(timeout=30)
