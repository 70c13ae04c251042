"""What every marketstream process shares: the contracts (records, Avro codec, topics, schema ids,
partitioning, intervals, symbols, errors) and the plumbing (settings, Kafka publisher and admin,
dead letters, metrics, status endpoints, PostgreSQL connection, command-line conventions).

It imports nothing from streams, connectors or gateways; they all import from here.
"""
