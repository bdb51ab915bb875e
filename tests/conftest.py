pytest_plugins = ["tests.stack_fixtures"]
