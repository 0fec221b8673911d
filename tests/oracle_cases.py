"""A small enumerable data distribution shared by the exactness tests."""

from flexmdm.testing.structured import BINARY, toy_distribution

VOCAB = BINARY  # real tokens 0 and 1

P1 = toy_distribution()
