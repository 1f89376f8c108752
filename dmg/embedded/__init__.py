"""An embedded (one-machine) site: the servers and nodes it runs, how it starts, stops
and supervises them, and the fault hooks tests and benchmarks use (``faults.py``)."""
