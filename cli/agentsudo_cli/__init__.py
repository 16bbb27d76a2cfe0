"""The ``agentsudo`` command line: keys, issue, verify, inspect, run."""
