"""Drift monitoring: thresholds, the rolling window, webhooks, stream parsing, batch end to end."""

from __future__ import annotations

import datetime
import http.server
import json
import logging
import random
import threading
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import SENTIMENT, tiny_config, write_csv
from typer.testing import CliRunner

import bridgetune
from bridgetune.cli import app
from bridgetune.config import ConfigError, MonitorConfig
from bridgetune.data.schema import DataError
from bridgetune.inference.predictor import Predictor
from bridgetune.lifecycle.monitor import (
    Alert,
    DriftMonitor,
    check_window,
    label_shares,
    post_alert,
)
from bridgetune.lifecycle.monitor_report import parse_timestamp, parse_window, read_stream

UTC = datetime.timezone.utc
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cfg(**values) -> MonitorConfig:
    return MonitorConfig(**{"min_samples": 1, "max_share_shift": None, **values})


# --- check_window -----------------------------------------------------------------------------


def test_share_shift_is_strict_and_names_expected():
    shares, expected = {"neg": 0.75, "pos": 0.25}, {"neg": 0.5, "pos": 0.5}
    alerts = check_window(shares, None, 10, expected, _cfg(max_share_shift=0.2))
    assert alerts == [
        Alert("share_shift", "neg", 0.75, 0.2, 0.5, 10),
        Alert("share_shift", "pos", 0.25, 0.2, 0.5, 10),
    ]
    assert check_window(shares, None, 10, expected, _cfg(max_share_shift=0.25)) == []


def test_share_max_low_confidence_and_min_samples():
    cfg = _cfg(label_share_max={"neg": 0.5, "pos": 0.9}, min_mean_confidence=0.75, min_samples=4)
    shares, expected = {"neg": 0.75, "pos": 0.25}, {"neg": 0.5, "pos": 0.5}
    alerts = check_window(shares, 0.5, 4, expected, cfg)
    assert alerts == [
        Alert("share_max", "neg", 0.75, 0.5, 0.5, 4),
        Alert("low_confidence", None, 0.5, 0.75, None, 4),
    ]
    assert check_window(shares, 0.5, 3, expected, cfg) == []  # below min_samples
    assert check_window(shares, 0.75, 4, expected, cfg)[-1].kind == "share_max"  # not below
    assert check_window(shares, None, 4, expected, cfg) == alerts[:1]  # no confidence (NER)


def test_alert_message_and_dict():
    alert = Alert("share_max", "negative", 0.62, 0.4, 0.32, 120)
    assert alert.message() == (
        "share of 'negative' is 0.62, above its limit 0.40 "
        "(0.32 in training; 120 predictions in the window)"
    )
    assert alert.to_dict()["message"] == alert.message()
    assert alert.to_dict()["kind"] == "share_max"
    low = Alert("low_confidence", None, 0.5, 0.6, None, 80)
    assert low.message() == "mean confidence is 0.50, below 0.60 (80 predictions in the window)"
    assert Alert("share_shift", "a", 0.7, 0.2, 0.4, 9).message() == (
        "share of 'a' is 0.70 vs 0.40 in training, a shift over 0.20 (9 predictions in the window)"
    )
    no_expected = Alert("share_max", "a", 0.7, 0.5, None, 9).message()
    assert no_expected.endswith("limit 0.50 (9 predictions in the window)")


# --- DriftMonitor -----------------------------------------------------------------------------


def test_alert_fires_once_clears_and_fires_again():
    cfg = _cfg(window=4, min_samples=2, label_share_max={"neg": 0.5}, clear_margin=0)
    monitor = DriftMonitor({"neg": 0.5, "pos": 0.5}, cfg)
    fired = [monitor.observe([label], 0.9) for label in ["pos", "neg", "neg", "neg"]]
    assert [len(new) for new in fired] == [0, 0, 1, 0]  # 1/2 is not above 0.5; 2/3 is
    assert fired[2][0].key == ("share_max", "neg")
    assert [a.value for a in monitor.active] == [0.75]  # still active, latest value
    assert monitor.observe(["pos"], 0.9) == []  # [neg neg neg pos]: 0.75
    assert monitor.observe(["pos"], 0.9) == []  # [neg neg pos pos]: 0.5 clears
    assert monitor.active == []
    assert monitor.observe(["neg"], 0.9) == []  # [neg pos pos neg]
    again = monitor.observe(["neg"], 0.9)  # [pos pos neg neg]: 0.5
    assert again == []
    again = monitor.observe(["neg"], 0.9)  # [pos neg neg neg]: 0.75
    assert [a.key for a in again] == [("share_max", "neg")]
    snapshot = monitor.snapshot()
    assert snapshot["count"] == 4
    assert snapshot["shares"] == {"neg": 0.75, "pos": 0.25}
    assert snapshot["active_alerts"][0]["kind"] == "share_max"


def _raised(monitor: DriftMonitor, labels: str, confidence: float = 0.9) -> list[tuple]:
    """Keys of the alerts raised while `labels` ('n'/'p' per prediction) are observed."""
    names = {"n": "neg", "p": "pos"}
    return [a.key for x in labels for a in monitor.observe([names[x]], confidence)]


def test_an_active_alert_clears_only_past_the_margin():
    """A share hovering at its threshold raises the alert once, not at every crossing."""
    # window of 10: 0.7 neg (a shift of 0.2, not over 0.2), 0.8 (over), back to 0.7 for a
    # while, then 0.8 again
    start, hover = "pppnnnnnnn", "npppnnnnnnnn"
    shift = [("share_shift", "neg"), ("share_shift", "pos")]
    plain = DriftMonitor(
        {"neg": 0.5, "pos": 0.5},
        _cfg(window=10, min_samples=10, max_share_shift=0.2, clear_margin=0),
    )
    assert _raised(plain, start) == []
    assert _raised(plain, hover) == shift * 2  # raised, cleared at 0.7, raised again
    monitor = DriftMonitor(
        {"neg": 0.5, "pos": 0.5}, _cfg(window=10, min_samples=10, max_share_shift=0.2)
    )
    assert monitor.cfg.clear_margin == 0.05  # the default
    assert _raised(monitor, start) == []
    assert _raised(monitor, hover) == shift  # 0.7 is not back inside 0.2 by 0.05: kept
    active = {a.key: a for a in monitor.active}
    assert active[shift[0]].threshold == 0.2  # messages show the configured threshold
    assert active[shift[0]].value == 0.8
    assert _raised(monitor, "pppp") == [] and monitor.active == []  # 0.6 clears


def test_low_confidence_clears_only_past_the_margin():
    cfg = _cfg(
        window=10, min_samples=10, min_mean_confidence=0.8
    )  # raised below 0.8, kept up to 0.85
    monitor = DriftMonitor({"neg": 0.5, "pos": 0.5}, cfg)
    assert _raised(monitor, "np" * 5, confidence=0.7) == [("low_confidence", None)]
    _raised(monitor, "np" * 2 + "n", confidence=0.95)  # mean 0.825
    assert [a.kind for a in monitor.active] == ["low_confidence"]
    _raised(monitor, "p" + "np" * 2, confidence=0.95)  # mean 0.95
    assert monitor.active == []


def test_rolling_counts_match_a_recount():
    rng = random.Random(0)
    labels = ["a", "b", "c"]
    monitor = DriftMonitor({"a": 0.2, "b": 0.3, "c": 0.5}, _cfg(window=7))
    seen: list[tuple[list[str], float]] = []
    for _ in range(200):
        observed = rng.sample(labels, rng.randint(0, 3))
        confidence = rng.random()
        monitor.observe(observed, confidence)
        seen.append((observed, confidence))
        window = seen[-7:]
        counts = Counter(label for names, _ in window for label in names)
        total = sum(counts.values())
        snapshot = monitor.snapshot()
        assert snapshot["count"] == len(window)
        for label in labels:
            assert snapshot["shares"][label] == pytest.approx(counts[label] / total if total else 0)
        mean = sum(c for _, c in window) / len(window)
        assert snapshot["mean_confidence"] == pytest.approx(mean, abs=1e-9)


def test_multilabel_and_ner_shares_are_shares_of_labels():
    multilabel = DriftMonitor({"billing": 0.5, "shipping": 0.5}, _cfg())
    multilabel.observe(["billing", "shipping"], 0.8)
    multilabel.observe(["billing"], 0.6)
    multilabel.observe([], 0.7)  # counts as a prediction, adds no label
    snapshot = multilabel.snapshot()
    assert snapshot["count"] == 3
    assert snapshot["shares"] == {"billing": 2 / 3, "shipping": 1 / 3}
    assert snapshot["mean_confidence"] == pytest.approx(0.7)
    ner = DriftMonitor({"O": 0.7, "B-PER": 0.2, "I-PER": 0.1}, _cfg())
    ner.observe(["B-PER", "I-PER", "O", "O"], None)
    ner.observe(["O", "O", "O", "B-PER"], None)
    snapshot = ner.snapshot()
    assert snapshot["shares"] == {"O": 5 / 8, "B-PER": 2 / 8, "I-PER": 1 / 8}
    assert snapshot["mean_confidence"] is None
    assert label_shares(Counter(), ["x"]) == {"x": 0.0}


def test_monitor_signal_per_task():
    from bridgetune.tasks import build_task

    single = {"label": "neg", "score": 0.8, "scores": {"neg": 0.8, "pos": 0.2}}
    assert build_task("classification", ["neg", "pos"]).monitor_signal(single) == (["neg"], 0.8)
    same = {**single, "label": "same"}
    assert build_task("pair", ["same", "other"]).monitor_signal(same) == (["same"], 0.8)
    multi = {"labels": ["a"], "scores": {"a": 0.9, "b": 0.3}}
    labels, confidence = build_task("multilabel", ["a", "b"]).monitor_signal(multi)
    assert labels == ["a"] and confidence == pytest.approx((0.9 + 0.7) / 2)
    ner = {"tags": ["B-PER", "O"], "entities": []}
    tagger = build_task("ner", ["O", "B-PER", "I-PER"])
    assert tagger.monitor_signal(ner) == (["B-PER", "O"], None)


def test_unknown_label_in_share_max_is_a_config_error():
    with pytest.raises(ConfigError, match="did you mean 'negative'"):
        DriftMonitor({"negative": 0.5, "positive": 0.5}, _cfg(label_share_max={"negatve": 0.4}))


# --- webhooks ---------------------------------------------------------------------------------


@pytest.fixture()
def webhook_server():
    """A local HTTP server that records the JSON bodies POSTed to it."""
    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


def test_post_alert_sends_json(webhook_server):
    url, received = webhook_server
    alert = Alert("share_max", "negative", 0.7, 0.4, 0.3, 60)
    post_alert(url, alert, "sentiment-v3").join(10)
    assert len(received) == 1
    assert received[0]["model"] == "sentiment-v3"
    assert received[0]["alert"] == alert.to_dict()
    assert received[0]["text"] == f"[bridgetune] sentiment-v3: {alert.message()}"


def test_post_alert_failures_are_logged_not_raised(caplog):
    alert = Alert("low_confidence", None, 0.4, 0.6, None, 60)
    with caplog.at_level(logging.WARNING, logger="bridgetune.monitor"):
        post_alert("http://127.0.0.1:1/hook?token=secret", alert, "m").join(10)
        post_alert("file:///etc/passwd", alert, "m").join(10)
    messages = [r.getMessage() for r in caplog.records]
    assert any("POST to 127.0.0.1:1 failed" in m for m in messages)
    assert any("not an http(s) URL" in m for m in messages)
    assert not any("secret" in m for m in messages)


# --- stream parsing ---------------------------------------------------------------------------


def test_parse_window():
    assert parse_window("90s") == datetime.timedelta(seconds=90)
    assert parse_window("30m") == datetime.timedelta(minutes=30)
    assert parse_window(" 1H ") == datetime.timedelta(hours=1)
    assert parse_window("1.5d") == datetime.timedelta(hours=36)
    for bad in ("", "1", "h", "0m", "-1h", "1w", "1 hour", "abc"):
        with pytest.raises(ConfigError, match="not a duration"):
            parse_window(bad)


def test_parse_timestamp_forms_agree():
    moment = datetime.datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
    for value in (
        "2024-05-01T09:30:00Z",
        "2024-05-01T11:30:00+02:00",
        "2024-05-01 09:30",  # no offset: UTC
        moment.timestamp(),
        int(moment.timestamp()),
    ):
        assert parse_timestamp(value) == moment
    for bad in ("yesterday", "", True, None, [1]):
        with pytest.raises(ValueError):
            parse_timestamp(bad)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "hi"}', "'timestamp' is missing"),
        ('{"text": "hi", "timestamp": "yesterday"}', "timestamp 'yesterday' not understood"),
        ('{"text": "", "timestamp": 0}', "'text' is missing or empty"),
        ('{"text": "hi", "timestamp": 0', "not valid JSON"),
        ('["hi", 0]', "must be a JSON object"),
    ],
)
def test_bad_stream_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "stream.jsonl"
    path.write_text('{"text": "ok", "timestamp": 1}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="stream.jsonl:3: ") as error:
        read_stream(path)
    assert message in str(error.value)


def test_stream_is_sorted_and_pairs_are_required(tmp_path):
    path = tmp_path / "stream.jsonl"
    rows = [{"text": "b", "timestamp": 20}, {"text": "a", "timestamp": 10, "text_pair": "x"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert [r.text for r in read_stream(path)] == ["a", "b"]
    with pytest.raises(DataError, match="stream.jsonl:1: 'text_pair' is missing"):
        read_stream(path, pair=True)
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="no records"):
        read_stream(path)


# --- batch monitoring end to end --------------------------------------------------------------


@pytest.fixture(scope="module")
def sentiment_model(tiny_bert, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("monitor-run")
    data = write_csv(directory / "sentiment.csv", ["text", "label"], SENTIMENT)
    config = tiny_config(
        tiny_bert, directory / "runs", train={"epochs": 15}, data={"train": str(data)}
    )
    config["data"]["dev"] = str(data)
    return bridgetune.train(config).model_dir


def _spiky_stream(model_dir: Path, path: Path) -> list[tuple[str, str]]:
    """Three hours of texts; the middle hour holds only texts the model calls negative.

    Returns (window start, predicted label) per record, from the model's own predictions.
    """
    texts = [text for text, _ in SENTIMENT]
    predicted = [p["label"] for p in Predictor.load(model_dir).predict(texts)]
    negative = [t for t, label in zip(texts, predicted) if label == "negative"]
    assert negative and len(negative) < len(texts), "the tiny model must predict both labels"
    start = datetime.datetime(2024, 5, 1, 9, tzinfo=UTC)
    hours = [texts, (negative * 10)[:10], texts]
    rows, expected = [], []
    for hour, chosen in enumerate(hours):
        for index, text in enumerate(chosen):
            moment = start + datetime.timedelta(hours=hour, minutes=index)
            stamp = moment.isoformat() if index % 2 else moment.timestamp()  # both forms
            rows.append({"text": text, "timestamp": stamp})
            label = predicted[texts.index(text)]
            expected.append((start + datetime.timedelta(hours=hour), label))
    rng = random.Random(0)
    rng.shuffle(rows)  # the monitor sorts by time
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return expected


def _expected_flags(expected: list[tuple[datetime.datetime, str]], limit: float) -> list[bool]:
    by_hour: dict[datetime.datetime, list[str]] = {}
    for hour, label in expected:
        by_hour.setdefault(hour, []).append(label)
    return [labels.count("negative") / len(labels) > limit for _, labels in sorted(by_hour.items())]


def test_api_monitor_writes_report_and_flags_the_spike(
    sentiment_model, tmp_path, webhook_server, caplog
):
    url, received = webhook_server
    stream = tmp_path / "stream.jsonl"
    expected = _spiky_stream(sentiment_model, stream)
    cfg = _cfg(min_samples=5, label_share_max={"negative": 0.9}, webhook_url=url)
    with caplog.at_level(logging.WARNING, logger="bridgetune.monitor"):
        report = bridgetune.monitor(sentiment_model, stream, tmp_path / "out", "1h", cfg)
    flags = [w["flagged"] for w in report["windows"]]
    assert flags == _expected_flags(expected, 0.9)
    assert flags[1] and report["flagged_windows"] == sum(flags)
    assert [w["start"][11:16] for w in report["windows"]] == ["09:00", "10:00", "11:00"]
    assert report["windows"][1]["shares"]["negative"] == 1.0
    assert report["expected"] == {"negative": 0.5, "positive": 0.5}
    assert report["config"]["webhook_url"] == "(set)"
    alerts = [a for w in report["windows"] for a in w["alerts"]]
    assert sorted(p["alert"]["message"] for p in received) == sorted(a["message"] for a in alerts)
    assert any("drift alert" in r.getMessage() for r in caplog.records)
    out = tmp_path / "out"
    saved = json.loads((out / "monitor_report.json").read_text())
    assert saved["windows"] == report["windows"]
    assert "**ALERT**" in (out / "monitor_report.md").read_text()
    assert (out / "label_shares.png").read_bytes().startswith(PNG_MAGIC)


def test_cli_monitor_exit_codes(sentiment_model, tmp_path):
    runner = CliRunner()
    stream = tmp_path / "stream.jsonl"
    _spiky_stream(sentiment_model, stream)
    serve = tmp_path / "serve.yaml"
    serve.write_text(yaml.safe_dump({"monitor": {"max_share_shift": None}}), encoding="utf-8")
    base = ["monitor", str(sentiment_model), "--input", str(stream), "--config", str(serve)]
    args = [*base, "--output", str(tmp_path / "out"), "--min-samples", "5"]
    flagged = runner.invoke(app, [*args, "--label-share-max", "negative=0.9"])
    assert flagged.exit_code == 0, flagged.output
    assert "alerts fired" in flagged.output and "ALERT" in flagged.stdout
    assert (tmp_path / "out" / "label_shares.png").is_file()
    failing = runner.invoke(app, [*args, "--label-share-max", "negative=0.9", "--fail-on-alert"])
    assert failing.exit_code == 1
    quiet = runner.invoke(app, [*args, "--fail-on-alert"])  # no thresholds crossed
    assert quiet.exit_code == 0 and "0 of 3 windows flagged" in quiet.output
    typo = runner.invoke(app, [*args, "--label-share-max", "negatve=0.9"])
    assert typo.exit_code == 2 and "did you mean 'negative'" in typo.output.replace("\n", "")
    bad_window = runner.invoke(app, [*args, "--window", "1w"])
    assert bad_window.exit_code == 2 and "not a duration" in bad_window.output
