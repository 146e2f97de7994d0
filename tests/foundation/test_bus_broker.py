"""The FastStream broker every service builds takes Tollgate's comma-separated bootstrap
setting as a list of servers (FastStream would take the whole string as one server name, as
a cluster deployment once found: no service could start)."""

from __future__ import annotations

from deploy.stack import Endpoints
from shared.bus import keys_events_publisher, new_broker


async def test_a_comma_separated_bootstrap_reaches_the_servers_it_names(
    endpoints: Endpoints,
) -> None:
    # A dead server first: the broker must move on to the next one in the list.
    broker = new_broker(f"127.0.0.1:1, {endpoints.kafka_bootstrap}", "test-bus-broker")
    keys_events_publisher(broker, "test-bus-broker-unused")
    await broker.start()
    try:
        assert await broker.ping(timeout=5.0)
    finally:
        await broker.stop()
