"""Local fake provider servers speaking the providers' documented protocols, for tests and `make up` without keys."""
