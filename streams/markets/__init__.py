"""Cross-venue matching of prediction markets: the match_markets agent and its tables."""
