"""The /proc reader counts the CPU of a whole process tree, children included."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench.lib import procstat

pytestmark = pytest.mark.unit  # no server: `make test-unit`

BUSY = "import time\nend = time.process_time() + 5\nwhile time.process_time() < end: pass\n"


def test_cpu_of_a_tree_grows_with_a_busy_grandchild() -> None:
    # parent sleeps; its child spins: the CPU is only found by walking the tree.
    parent_code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {BUSY!r}])"
    parent = subprocess.Popen([sys.executable, "-c", parent_code])
    try:
        deadline = time.monotonic() + 10
        while not procstat.children(parent.pid):
            assert time.monotonic() < deadline, "the busy child never started"
            time.sleep(0.01)
        first = procstat.cpu_seconds(parent.pid)
        own_first = procstat.cpu_seconds(parent.pid, descendants=False)
        readings = [first]
        while readings[-1] < first + 0.3:
            assert time.monotonic() < deadline, f"CPU did not grow: {readings}"
            time.sleep(0.05)
            readings.append(procstat.cpu_seconds(parent.pid))
        assert readings == sorted(readings)
        assert procstat.cpu_seconds(parent.pid, descendants=False) - own_first < 0.2
        assert len(procstat.tree(parent.pid)) == 2
        assert procstat.rss_bytes(parent.pid) > 1_000_000
    finally:
        spinning = procstat.children(parent.pid)
        parent.kill()
        parent.wait()
        for pid in spinning:
            subprocess.run(["kill", str(pid)], check=False)


def test_a_gone_process_counts_nothing() -> None:
    assert procstat.cpu_seconds(2**22 + 12345) == 0
    assert procstat.rss_bytes(2**22 + 12345) == 0
