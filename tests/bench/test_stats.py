"""Percentiles as the bench reports them, and the py-spy summary it prints."""

from __future__ import annotations

import math

import pytest

from bench.lib.profile import aggregate, package
from bench.lib.stats import percentile, summary_ms

pytestmark = pytest.mark.unit  # no server: `make test-unit`


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100, unordered below
    shuffled = values[50:] + values[:50]
    assert percentile(shuffled, 50) == 50.5
    assert percentile(shuffled, 0) == 1
    assert percentile(shuffled, 100) == 100
    assert math.isclose(percentile(shuffled, 99), 99.01)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_summary_is_in_milliseconds() -> None:
    figures = summary_ms([0.001, 0.002, 0.003])
    assert figures["p50"] == 2.0
    assert figures["max"] == 3.0
    assert math.isclose(figures["p90"], 2.8)


def test_folded_stacks_give_own_and_total_samples() -> None:
    folded = "\n".join(
        [
            "main (a.py:1);run (b.py:2);handler (c.py:3);dumps (d.py:4) 6",
            "main (a.py:1);run (b.py:2);handler (c.py:3) 3",
            "main (a.py:1);run (b.py:2);rec (e.py:5);rec (e.py:5) 1",
            "main (a.py:1);send (f.py:6) 1",
        ]
    )
    top = aggregate(folded)
    assert top.samples == 11
    assert top.own[0] == ("dumps (d.py:4)", 6)
    assert dict(top.own)["handler (c.py:3)"] == 3
    totals = dict(top.total)
    assert top.scaffold == ["main (a.py:1)", "run (b.py:2)"]  # near the root: not worth a line
    assert "main (a.py:1)" not in totals
    assert totals["handler (c.py:3)"] == 9
    assert totals["rec (e.py:5)"] == 1  # once per stack, however deep the recursion


def test_frames_are_grouped_by_package() -> None:
    assert package("send (anyio/_backends/_asyncio.py:1459)") == "anyio"
    assert package("_forward (services/gateway/proxy.py:163)") == "services/gateway"
    assert package("current_task (asyncio/tasks.py:35)") == "asyncio"
    assert package("add (_weakrefset.py:85)") == "_weakrefset"
    assert package("__getitem__ (<frozen os>:674)") == "<frozen os>"
    assert dict(aggregate("a (x/y.py:1);b (httpx/_client.py:2) 4").packages) == {"httpx": 4}
