"""The local demo behind `make run`: sample events for the bundle's jobs, produced and checked.

Not part of the library: nothing below the CLI imports it.
"""
