"""Metrics, evidence, attribution, figures, DVC experiments as records, leaderboards and comparisons."""
