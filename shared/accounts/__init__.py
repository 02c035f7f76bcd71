"""Accounts: users, API keys, token encryption and secret rotation."""
