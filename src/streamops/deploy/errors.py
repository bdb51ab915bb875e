"""Errors of the deploy stage, typed by meaning (each says what, where and the fix)."""

from __future__ import annotations

from streamops.errors import StreamopsError


class DeployError(StreamopsError):
    """A job cannot be deployed or operated as asked."""


class DriftError(DeployError):
    """The live job was edited outside the bundle; deploying would silently undo that edit."""


class RunWaitTimeout(DeployError):
    """A Databricks run did not reach the expected state in time."""
