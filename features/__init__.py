"""nba stage: features."""
