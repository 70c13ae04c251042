"""The embedded stack for `make up` and the tests: Tansu (Kafka API) and PostgreSQL, on loopback."""
