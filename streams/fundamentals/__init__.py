"""The `sink_fundamentals` agent: financial statements from Kafka into the `fundamentals` table."""
