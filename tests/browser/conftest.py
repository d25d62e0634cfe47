"""Browser tests: the shared Playwright fixtures (browser, page, log_in) live in tests/conftest.py."""
