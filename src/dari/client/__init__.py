"""dari.client: the async Python SDK that the CLI, the benchmark and the tests all use."""

from dari.client.client import Client, Event
from dari.client.outbox import Outbox

__all__ = ["Client", "Event", "Outbox"]
