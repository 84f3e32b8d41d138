"""Privacy rules: deployment profiles, placement, cases (redaction is `custodes.redaction`)."""
