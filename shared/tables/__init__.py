"""Tables: the payload codec, uploaded files, ingest, size and number limits."""
