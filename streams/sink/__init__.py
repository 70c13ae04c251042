"""Sinks from Kafka into PostgreSQL/TimescaleDB."""
