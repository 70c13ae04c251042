"""Gap detection: which bars should exist (expected.py, pure), and the agent that finds holes."""
