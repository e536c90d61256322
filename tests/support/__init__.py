"""Test helpers shared by the suites (test servers, fixtures)."""
