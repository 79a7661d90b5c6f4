"""`dari bench`: a lean load generator and bounded scenarios against a real `dari serve`.

The load generator runs in this process; the server is a separate subprocess (one fresh server per
scenario) unless `--server URL` points at one that is already running.
"""
