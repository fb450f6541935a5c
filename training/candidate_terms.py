"""Where the candidate terms used to live; they are now ``training.model.candidates`` (one module of the network)."""

from training.model.candidates import DAYS_CAP, N_ITEM_FEATURES, N_TOPICS, N_TYPES, CandidateTerms, contact_width, days_code

__all__ = ["CandidateTerms", "DAYS_CAP", "N_ITEM_FEATURES", "N_TOPICS", "N_TYPES", "contact_width", "days_code"]
