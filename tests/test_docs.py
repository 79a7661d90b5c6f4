"""The docs stay true: every method and error code is documented, the README keeps its two commands."""

from __future__ import annotations

from pathlib import Path

from dari.protocol.errors import ErrorCode
from dari.protocol.methods import METHODS

ROOT = Path(__file__).resolve().parent.parent


def test_protocol_doc_covers_every_method_and_error() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    for name in METHODS:
        assert f"`{name}`" in doc, f"docs/protocol.md does not document {name}"
    for code in ErrorCode:
        assert f"`{code.value}`" in doc, f"docs/protocol.md does not document error {code.value}"


def test_readme_has_run_and_test_sections() -> None:
    readme = (ROOT / "README.md").read_text()
    run = readme.index("## Run")
    test = readme.index("## Test")
    assert readme.index("dari") < run < test
    assert "dari serve --demo" in readme[run:test]
    assert "pytest" in readme[test:]
