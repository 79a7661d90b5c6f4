"""pytest fixtures over `Lab`. Import them into a test module (or a conftest):

    from dari.lab.fixtures import lab_fixture, lab_session_fixture  # noqa: F401

and ask for `lab` (or `lab_session`) in a test's arguments.

`lab_session` (module scope) builds one lab with the server and a relay running; `lab` hands it to
a test and, after it, lifts every scenario the test applied and brings the server back, so tests
share one build (about two seconds) without seeing each other's blocks. Where the machine lacks
what the lab needs, tests are skipped with the reason; with CI=true they fail instead, because CI
machines have everything.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from dari.lab.lab import Lab, LabUnavailable
from dari.lab.netns import missing_features


def require_lab() -> None:
    """Skip (or, in CI, fail) the calling test when the lab cannot run here."""
    missing = missing_features()
    if missing:
        reason = "censorship lab unavailable: " + "; ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI machines must have these)")
        pytest.skip(reason)


@pytest.fixture(scope="module", name="lab_session")
def lab_session_fixture() -> Iterator[Lab]:
    require_lab()
    lab = Lab(penalty_s=float(os.environ.get("DARI_LAB_PENALTY_S", "3")))
    try:
        lab.start()
    except LabUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    try:
        lab.start_server()
        lab.start_relay()
        yield lab
    finally:
        lab.close()


@pytest.fixture(name="lab")
def lab_fixture(lab_session: Lab) -> Iterator[Lab]:
    yield lab_session
    lab_session.lift_all()
    if not lab_session.server_running:
        lab_session.start_server()
