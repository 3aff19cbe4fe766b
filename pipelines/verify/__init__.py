"""Verification: what turns ingested statements into the learner footprint."""
