"""The rolegate real-server lab as a package: topology (settings), common (processes, lock,
packages, TLS), one module per engine, cli (the commands). Run it as `python3 loadtest/lab.py`."""
