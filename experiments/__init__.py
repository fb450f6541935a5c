"""nba stage: experiments."""
