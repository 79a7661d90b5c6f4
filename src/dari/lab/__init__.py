"""The censorship lab: the DESIGN's censorship scenarios reproduced on one Linux machine (root).

Network namespaces joined by veth pairs around a router that plays the censor (topology.py): a
censored region (10.77.1.0/24) and a control region (10.77.2.0/24) of clients, the server
(10.77.10.2 and .3: chat.dari.test, api., friends., story., pc.dari.test → .2, edge.dari.test → .3),
a relay (10.77.11.2, relay1.example.net) and a DNS resolver (10.77.12.2) that every lab namespace
uses through /etc/netns/NS/resolv.conf. The censor (censor.py, middlebox.py, dns.py) acts only on
packets from or to the censored region; the control region crosses the same router untouched.

    from dari.lab import Lab, probes

    with Lab(penalty_s=3) as lab:                   # builds it; checks the kernel first (LabUnavailable)
        lab.start_server()                          # dari serve on :80 (HTTP, WS, long-poll, REST) and
                                                    # :7000 (frames); TLS front :443 (frames) and :8443
                                                    # (HTTPS); lab.server_pin is its key pin
        lab.start_relay()                           # `dari relay` on relay1.example.net :443/:8443
        lab.apply("sni-filter", penalty_s=3)        # a block starts (scenarios.SCENARIOS)
        probes.tls(lab.ns("censored"), lab.addresses.server, 443, "chat.dari.test")   # -> Outcome("reset")
        lab.lift("sni-filter")                      # the block is lifted

Running things inside a namespace ("censored", "censored-2", "control", "censor", "server", "relay",
"dns", or a full namespace name):

    lab.run(ns, argv) / lab.popen(ns, argv)        # any command, `ip netns exec` under the hood
    lab.python(ns, "print(1)") / lab.python(ns, module="m", args=[...])   # this venv's Python
    rc = await lab.client("censored", ["ws", "pinned-tls", "relay"])      # a dari SDK client living in
    await rc.signup(...); await rc.call("friend.add", handle=...)         # the namespace (agent.py),
    await rc.send_message(chat_id, "hi"); await rc.next_event("message.new"); await rc.status()
    lab.route(kind)                                 # Route objects: ws, longpoll, wss, stream, tls,
                                                    # pinned-tls, alt-tls, relay
    lab.socket(ns) / probes.*(lab.ns(role), ...)    # plain sockets made inside a namespace, used here
    lab.censor_events()                             # what the middlebox did (sni-reset, http-filter, ...)
    lab.addresses                                   # every address and name

pytest: `from dari.lab.fixtures import lab_fixture, lab_session_fixture` gives `lab` (one shared
lab per module; blocks lifted after each test). `dari lab run SCENARIO` prints a demo timeline;
timeline.HOOKS is where diagnosis and incident output plug in. docs/operations.md, "Censorship
lab", has the rest.
"""

from __future__ import annotations

from dari.lab.lab import Lab, LabUnavailable
from dari.lab.scenarios import SCENARIOS, Scenario

__all__ = ["SCENARIOS", "Lab", "LabUnavailable", "Scenario"]
