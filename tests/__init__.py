"""The test suite: a package, so `tests.*` imports find it before any `tests` package a dependency installs."""
