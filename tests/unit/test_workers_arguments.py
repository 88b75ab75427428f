"""How `chime-egress run --workers N` divides its command line: the metrics port is the
supervisor's, every other setting is each worker's."""

from __future__ import annotations

from chime_egress.proxy.workers import _split_metrics


def test_the_metrics_setting_is_taken_out_in_either_spelling() -> None:
    kept, value = _split_metrics(
        ["--listen-port", "8080", "--set", "chime_metrics=0.0.0.0:9108", "--set", "a=b"]
    )
    assert kept == ["--listen-port", "8080", "--set", "a=b"] and value == "0.0.0.0:9108"
    kept, value = _split_metrics(["--set=chime_metrics=9108", "--set=chime_drain_seconds=5"])
    assert kept == ["--set=chime_drain_seconds=5"] and value == "9108"


def test_the_last_metrics_setting_counts_and_others_are_kept_whole() -> None:
    kept, value = _split_metrics(
        ["--set", "chime_metrics=1", "--set", "chime_metricsx=2", "--set", "chime_metrics=3"]
    )
    assert kept == ["--set", "chime_metricsx=2"] and value == "3"
    assert _split_metrics(["--mode", "regular", "--set"]) == (["--mode", "regular", "--set"], None)
