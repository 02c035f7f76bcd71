"""Webhooks: job events, delivery records, target checks."""
