"""`dari lab`: run a censorship scenario as a readable timeline, list scenarios, check the machine,
clean up after a crashed run. Needs root (network namespaces, nftables, tc)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("lab", help="the censorship lab (network namespaces; needs root)",
                       description="Reproduce censorship scenarios on this machine and watch dari live through them.")
    lab_sub = p.add_subparsers(dest="lab_command", required=True)
    run = lab_sub.add_parser("run", help="build the lab, run one scenario as a timeline, tear it down")
    run.add_argument("scenario", help="see `dari lab list`")
    run.add_argument("--hold", type=float, default=3.0, help="seconds to wait after the block is lifted")
    run.add_argument("--penalty", type=float, help="sni-filter: penalty box seconds")
    run.add_argument("--rate", help="throttle: rate, e.g. 20kbit")
    run.set_defaults(func=_run)
    lab_sub.add_parser("list", help="the scenarios").set_defaults(func=_list)
    lab_sub.add_parser("check", help="does this machine have what the lab needs?").set_defaults(func=_check)
    lab_sub.add_parser("cleanup", help="remove namespaces left by labs whose process died").set_defaults(
        func=_cleanup)


def _list(args: argparse.Namespace) -> int:
    from dari.lab.scenarios import SCENARIOS

    width = max(map(len, SCENARIOS))
    for name, sc in SCENARIOS.items():
        print(f"{name:<{width}}  {sc.summary}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from dari.lab.netns import missing_features

    missing = missing_features()
    if not missing:
        print("ok: namespaces, veth, nftables (tproxy, socket, reject, timeout sets), tc htb, IP_TRANSPARENT")
        return 0
    for reason in missing:
        print(f"missing: {reason}")
    return 1


def _cleanup(args: argparse.Namespace) -> int:
    from dari.lab.lab import cleanup_stale

    removed = cleanup_stale()
    print(f"removed {len(removed)} namespaces" + (f": {', '.join(removed)}" if removed else ""))
    return 0


def _run(args: argparse.Namespace) -> int:
    from dari.lab import timeline, timeline_reach

    timeline_reach.install()
    from dari.lab.lab import LabUnavailable
    from dari.lab.scenarios import SCENARIOS

    if args.scenario not in SCENARIOS:
        print(f"dari lab: unknown scenario {args.scenario!r}; one of: {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    params: dict[str, Any] = {}
    if args.penalty is not None:
        params["penalty_s"] = args.penalty
    if args.rate:
        params["rate"] = args.rate
    try:
        return asyncio.run(timeline.run(args.scenario, sys.stdout, hold_s=args.hold, params=params))
    except LabUnavailable as exc:
        print(f"dari lab: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
