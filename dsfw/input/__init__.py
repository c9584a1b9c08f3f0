"""What the policy sees: the canonical request, path, body, Docker's schemas, derived facts, redaction."""
