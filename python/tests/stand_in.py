"""Shared by the tests that put a stand-in torch module in place of the real one."""
import sys
import unittest


class StandInTorchCase(unittest.TestCase):
    """Restores whatever `torch` was in sys.modules after each test; use_torch(m) installs m."""

    def setUp(self):
        self.saved_torch = sys.modules.get("torch")

    def tearDown(self):
        if self.saved_torch is None:
            sys.modules.pop("torch", None)
        else:
            sys.modules["torch"] = self.saved_torch

    def use_torch(self, module):
        sys.modules["torch"] = module
