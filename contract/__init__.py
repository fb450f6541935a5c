"""nba stage: contract."""
