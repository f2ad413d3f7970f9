"""Helpers shared by the test suites: free ports, real server processes, real databases."""
