"""Infrastructure: settings, database, Redis, logging, errors, metrics, rate limits."""
