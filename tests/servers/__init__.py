"""Real servers for tests and benchmarks, each in its own virtual environment under .cache/.

They run on loopback ports and are stopped by process group.
"""
