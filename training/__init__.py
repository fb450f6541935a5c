"""nba stage: training."""
