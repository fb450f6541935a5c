"""nba: next-best-action for pharma omnichannel HCP engagement."""

__version__ = "0.1.0"
