"""Talking to an EOTDL repository over HTTP: settings, the API routes, the `Repository` the
mount reads, ingestion and download."""
