"""Stream processing for marketstream: contracts, codec, topics, Faust agents and sinks."""
