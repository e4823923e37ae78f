"""Connectors: sources and sinks for files, databases and services, built on etlkit's node roles."""
