"""A Kafka client's repeated error lines, while a broker is away, go out once per window."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from shared.logs import RepeatLimiter, setup_logging
from tests.manual_clock import ManualClock

pytestmark = pytest.mark.unit  # no server: `make test-unit`

_LOGGERS = (
    "aiokafka",
    "aiokafka.conn",
    "aiokafka.consumer.fetcher",
    "services.gateway.usage.emitter",
)


@pytest.fixture
def lines() -> Iterator[tuple[list[str], ManualClock]]:
    """What a handler with the limiter lets out, and the limiter's clock."""
    out: list[str] = []
    clock = ManualClock()
    handler = logging.Handler()
    handler.emit = lambda record: out.append(f"{record.name} {record.getMessage()}")  # type: ignore[method-assign]
    handler.addFilter(RepeatLimiter(window_s=30.0, clock=clock))
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # Whatever ran before may have quietened or detached these loggers: open them up here.
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    kept = [(lg.level, lg.disabled, lg.propagate) for lg in loggers]
    for logger in loggers:
        logger.setLevel(logging.NOTSET)
        logger.disabled, logger.propagate = False, True
    try:
        yield out, clock
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        for logger, (level, disabled, propagate) in zip(loggers, kept, strict=True):
            logger.setLevel(level)
            logger.disabled, logger.propagate = disabled, propagate


def test_a_repeated_line_goes_out_once_a_window_with_the_count_held_back(
    lines: tuple[list[str], ManualClock],
) -> None:
    out, clock = lines
    conn = logging.getLogger("aiokafka.conn")
    for attempt in range(50):
        conn.error("Unable connect to node with id %s: %s", 1, f"refused #{attempt}")
        clock.now += 0.1
    assert out == ["aiokafka.conn Unable connect to node with id 1: refused #0"]
    clock.now += 30
    conn.error("Unable connect to node with id %s: %s", 1, "refused again")
    assert out[1] == (
        "aiokafka.conn Unable connect to node with id 1: refused again"
        " [49 more like this in the last 30 s]"
    )
    conn.error("Unable connect to node with id %s: %s", 1, "and again")
    assert len(out) == 2, "a new window began"


def test_other_lines_and_other_loggers_pass(lines: tuple[list[str], ManualClock]) -> None:
    out, _ = lines
    fetcher = logging.getLogger("aiokafka.consumer.fetcher")
    ours = logging.getLogger("services.gateway.usage.emitter")
    for _ in range(3):
        fetcher.error("Failed fetch offsets from %s: %s", 1, "NotLeader")
        fetcher.warning("Failed fetch offsets from %s: %s", 1, "NotLeader")  # another level
        logging.getLogger("aiokafka.conn").error("Unable connect to node with id %s", 1)
        ours.warning("usage events not acknowledged (%s)", "timeout")
    assert len([line for line in out if line.startswith("aiokafka")]) == 3
    assert len([line for line in out if line.startswith("services")]) == 3


def test_setup_logging_limits_repeats_on_its_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("test", json_lines=False)
        for _ in range(20):
            logging.getLogger("aiokafka").error("Unable connect to %r", "127.0.0.1:1")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    assert stream.getvalue().count("Unable connect to") == 1
