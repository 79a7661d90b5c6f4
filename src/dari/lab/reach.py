"""Run inside a lab namespace: diagnose the routes, print the measurement as one JSON line, and
report it to the server through whichever route still works (as a real client would).

    python -m dari.lab.reach CONFIG_JSON
CONFIG: {"routes": [Route dicts], "addresses": {name: [ip]}, "neutral_sni": str, "region": "CN",
         "asn": "AS4134", "report": true, "timeout": 3.0, "probe_bytes": 32768,
         "queue": "/path/reach.db" (reports wait there while nothing works, as on a phone),
         "flush_only": false (just send what is queued)}
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from dari.client import Client
from dari.client.diagnose import NEUTRAL_SNI, Target, diagnose
from dari.client.reach_reports import ReportQueue
from dari.lab.agent import route_from_dict


async def run(config: dict[str, Any]) -> dict[str, Any]:
    routes = [route_from_dict(r) for r in config["routes"]]
    queue = ReportQueue(config.get("queue", ":memory:"), region=config.get("region", "ZZ"),
                        asn=config.get("asn", ""))
    working = routes
    out: dict[str, Any] = {}
    if not config.get("flush_only"):
        target = Target(routes, config.get("addresses", {}), config.get("neutral_sni", NEUTRAL_SNI),
                        [tuple(c) for c in config.get("controls", [])], None, float(config.get("timeout", 3.0)))
        d = await diagnose(target, queue.region, queue.asn, probe_bytes=int(config.get("probe_bytes", 32768)))
        out = d.to_json()
        queue.add_diagnosis(d)
        working = [r for r in routes if r.label in d.working_routes] or routes
    out["queued"] = len(queue)
    if config.get("report"):
        client = Client(working[0].url, routes=working, reconnect=False, call_timeout=10)
        try:
            out["reported"] = await asyncio.wait_for(
                queue.flush(lambda method, **params: client.call(method, **params)), 20)
            out["reported_via"] = client.route
        except Exception as exc:  # nothing works: the report stays queued, as on a phone
            out["reported"] = 0
            out["report_error"] = str(exc) or type(exc).__name__
        finally:
            await client.close()
    return out


def main() -> None:
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1]))), ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
