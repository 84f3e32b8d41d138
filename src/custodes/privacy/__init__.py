"""Privacy rules: deployment profiles, placement, cases, redaction."""
