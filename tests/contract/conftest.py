"""Fixtures of the contract tests (helpers live in contract_fixtures, importable by name)."""

from contract_fixtures import csv_export, parquet_export  # noqa: F401  (registers the fixtures)
