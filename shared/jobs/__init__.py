"""Jobs: states, submission, the claim-run-end lifecycle, scheduling, events."""
