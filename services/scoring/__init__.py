"""The scoring service: explainable scorecards and reproducible decisions."""
