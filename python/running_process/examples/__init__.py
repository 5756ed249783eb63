"""Example backends shipped with the package (used by the demo and tests)."""
