"""nba stage: simulator."""
