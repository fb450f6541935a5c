"""nba stage: serving."""
