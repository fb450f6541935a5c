"""The README documents the data contract exactly as the code enforces it."""

from __future__ import annotations

from pathlib import Path

from contract.docs import BEGIN, END, contract_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_contract_section_is_current() -> None:
    text = README.read_text()
    assert BEGIN in text and END in text, "README lacks the generated contract section"
    section = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert section == contract_markdown(), "README contract section is stale: regenerate with `nba contract --write-readme`"
