"""Benchmarks behind ``flexmdm bench``: each writes a JSON record (and plots) saying how it was produced."""
