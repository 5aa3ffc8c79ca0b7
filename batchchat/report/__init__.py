"""Reporting, shared by every path: live counters, progress on a terminal or in a log, and the summary."""
