def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a long test (tens of seconds); still part of the full suite and CI")
    config.addinivalue_line("markers", "timeout(seconds): per-test limit (pytest-timeout)")
