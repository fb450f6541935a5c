"""Typed config of the contract stage (``configs/contract.yaml``): how issues are reported."""

from __future__ import annotations

from pydantic import Field

from nba.configuration import StageConfig


class ContractConfig(StageConfig):
    """Settings of ``nba import`` and ``nba validate``."""

    # Rows printed in the issue table; --errors-out always gets every listed issue.
    list_limit: int = Field(50, ge=1)
    # Issues materialised per (file, column, rule); the rest are counted in one extra issue, so a
    # systematically broken 10M-row column cannot exhaust memory.
    max_issues_per_rule: int = Field(1000, ge=1)
    # Progress bars on stderr over files and stages of an import.
    progress: bool = True
