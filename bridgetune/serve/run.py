"""Start the service under uvicorn: one process, or several workers sharing metrics and reloads.

With several workers every process loads the model; Prometheus values are shared through files
(`PROMETHEUS_MULTIPROC_DIR`) and a reload received by one worker is written to a pointer file
that the others follow within a second.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from bridgetune.config import ServeConfig
from bridgetune.serve.state import POINTER_ENV, SPEC_ENV


def run_server(model_dir: str | Path, config: ServeConfig, access_log: bool = False) -> None:
    """Serve `model_dir` until interrupted (blocking).

    Raises:
        ServeError: one process could not load the model (or knowledge base) at start: it
            stops instead of answering 503 forever (several workers report it on /ready).
    """
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options = {
        "host": config.host,
        "port": config.port,
        "access_log": access_log,
        "log_level": "info",
        "timeout_graceful_shutdown": 30,
    }
    if config.workers == 1:
        serve_one(model_dir, config, options)
        return
    shared = Path(tempfile.mkdtemp(prefix="bridgetune-serve-"))
    (shared / "metrics").mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(shared / "metrics")
    os.environ[POINTER_ENV] = str(shared / "model.json")
    os.environ[SPEC_ENV] = json.dumps(
        {"model_dir": str(Path(model_dir).resolve()), "config": config.model_dump()}
    )
    try:
        uvicorn.run(
            "bridgetune.serve.run:app_from_env", factory=True, workers=config.workers, **options
        )
    finally:
        shutil.rmtree(shared, ignore_errors=True)


class ServeError(RuntimeError):
    """The service stopped because what it serves could not be loaded; the message says why."""


def serve_one(model_dir: str | Path, config: ServeConfig, options: dict) -> None:
    """One uvicorn process that stops when the model fails to load at start."""
    import uvicorn

    from bridgetune.serve.app import create_app

    app = create_app(model_dir, config)
    server = uvicorn.Server(uvicorn.Config(app, **options))
    service = app.state.service

    def stop(reason: str) -> None:
        server.should_exit = True

    service.on_load_failure = stop
    server.run()
    reason = service.load_error or service.knowledge_error
    if reason:
        raise ServeError(reason)


def app_from_env():
    """The app of one worker process, built from the spec the parent put in the environment."""
    from bridgetune.serve.app import create_app

    spec = json.loads(os.environ[SPEC_ENV])
    return create_app(spec["model_dir"], ServeConfig.model_validate(spec["config"]))
