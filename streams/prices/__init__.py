"""The latest trade and quote of every instrument, for `GET /stocks/{symbol}/price`."""
