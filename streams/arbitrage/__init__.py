"""Arbitrage on matched prediction markets: fee models, edge arithmetic, flag_arbitrage."""
