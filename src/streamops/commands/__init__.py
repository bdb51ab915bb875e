"""CLI command groups, each registered on the main `streamops` app by cli.py."""
