"""Process-level tests of florence2-server (a package, so its conftest does not shadow tests/tools/conftest.py)."""
