"""Resource ids: the documented shape, uniform digits, no repeats, none shared with a fork."""

from __future__ import annotations

import os
import re
from collections import Counter

import pytest

from shared.ids import KEY_ID_CHARS, PROJECT_ID_CHARS, REQUEST_ID_CHARS, resource_id

pytestmark = pytest.mark.unit  # no server: `make test-unit`

BASE62 = re.compile(r"[A-Za-z0-9]+")


def test_ids_have_the_documented_shape() -> None:
    for length in (1, 20, 24, 64):
        made = resource_id("req", length)
        assert made.startswith("req_")
        assert len(made) == 4 + length
        assert BASE62.fullmatch(made[4:])
    assert re.fullmatch(KEY_ID_CHARS, resource_id("key"))
    assert re.fullmatch(PROJECT_ID_CHARS, resource_id("proj"))
    assert re.fullmatch(REQUEST_ID_CHARS, resource_id("req", 20))


def test_digits_are_uniform_and_ids_do_not_repeat() -> None:
    made = [resource_id("req", 20) for _ in range(31_000)]  # 620,000 digits, 10,000 per digit
    assert len(set(made)) == len(made)
    counts = Counter("".join(m[4:] for m in made))
    assert len(counts) == 62
    # Binomial(620,000, 1/62): sd about 99; a digit taken from a skewed map (a byte mod 62
    # without dropping 248-255) would be off by about 1,290 for the first eight digits.
    assert max(abs(n - 10_000) for n in counts.values()) < 600


def test_a_forked_child_makes_ids_of_its_own() -> None:
    resource_id("req")  # the parent's buffer holds random bytes
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, "\n".join(resource_id("req") for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split("\n"))
    os.waitpid(pid, 0)
    parent = {resource_id("req") for _ in range(50)}
    assert len(child) == 50
    assert not child & parent
