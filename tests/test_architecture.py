"""The architecture holds (#24): import-linter's contracts pass on the tree and fail on a planted
wrong import, and at runtime importing the Predictor, or serving a model, loads no training,
recipe or CLI module (what a static graph misses: package inits and string registries)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEVER_IN_INFERENCE = ("bridgetune.training", "bridgetune.recipes", "bridgetune.cli")


def loaded_modules(code: str, path: Path = ROOT) -> list[str]:
    """The bridgetune modules a fresh interpreter has loaded after running `code` with the
    package at `path`."""
    listed = "sorted(m for m in sys.modules if m.startswith('bridgetune'))"
    script = f"{code}\nimport json, sys\nprint(json.dumps({listed}))"
    done = subprocess.run([sys.executable, "-c", script], cwd=path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(path), "HF_HUB_OFFLINE": "1", "PATH": ""},
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def training_modules(modules: list[str]) -> list[str]:
    return [m for m in modules if m.startswith(NEVER_IN_INFERENCE)]


def lint_imports(path: Path) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache", "--no-logo"]
    return subprocess.run(command, cwd=path, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(path), "PATH": ""})  # fmt: skip


def planted_copy(tmp_path: Path, line: str) -> Path:
    """A copy of the package whose Predictor module ends with `line`."""
    shutil.copytree(ROOT / "bridgetune", tmp_path / "bridgetune",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    predictor = tmp_path / "bridgetune" / "inference" / "predictor.py"
    predictor.write_text(predictor.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    return tmp_path


def test_the_import_contracts_hold():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_planted_wrong_import_breaks_the_contracts(tmp_path):
    tree = planted_copy(tmp_path, "from bridgetune.training import loop  # noqa: E402,F401")
    done = lint_imports(tree)
    assert done.returncode != 0
    assert "bridgetune.inference.predictor -> bridgetune.training.loop" in done.stdout


def test_the_predictor_loads_no_training_module():
    modules = loaded_modules("import bridgetune.inference.predictor")
    print(f"import bridgetune.inference.predictor loads {len(modules)} modules:", modules)
    assert "bridgetune.inference.predictor" in modules
    assert training_modules(modules) == []
    assert "bridgetune.serve" not in modules  # nor the service
    root = loaded_modules("import bridgetune")
    assert root == ["bridgetune", "bridgetune._version"]  # the package face is lazy


def test_serving_models_loads_no_training_module(served_classifier, served_ner, tmp_path):
    lines = [
        "import time",
        "from fastapi.testclient import TestClient",
        "from bridgetune.config import ServeConfig",
        "from bridgetune.serve import create_app",
    ]
    for index, model_dir in enumerate((served_classifier, served_ner)):
        store = str(tmp_path / f"feedback{index}.db")
        lines += [
            f"app = create_app({str(model_dir)!r}, ServeConfig(feedback_db={store!r}))",
            "with TestClient(app) as client:",
            "    while client.get('/ready').status_code != 200:",
            "        time.sleep(0.05)",
            "    answer = client.post('/v1/predict', json={'texts': ['john visited paris']})",
            "    assert answer.status_code == 200, answer.text",
        ]
    modules = loaded_modules("\n".join(lines))
    assert "bridgetune.serve.app" in modules and "bridgetune.inference.predictor" in modules
    assert training_modules(modules) == []


def test_a_planted_runtime_import_fails_the_boundary_check(tmp_path):
    # a registry string no static graph sees: lint-imports passes, the runtime check does not
    line = "__import__('importlib').import_module('bridgetune.training.loop')"
    tree = planted_copy(tmp_path, line)
    assert lint_imports(tree).returncode == 0
    modules = loaded_modules("import bridgetune.inference.predictor", tree)
    assert "bridgetune.training.loop" in training_modules(modules)
