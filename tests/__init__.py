"""The test suite, a regular package so that `tests.*` imports resolve here even when an installed distribution
(mutmut 3 wheels ship a top-level `tests` package) puts another `tests` on the path."""
