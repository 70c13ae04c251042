"""Live trade statistics per instrument, served by the worker at `/stats`."""
