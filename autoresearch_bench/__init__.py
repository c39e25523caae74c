"""autoresearch-bench: Karpathy's autoresearch loop as a pytest plugin and benchmark harness.

Candidate training code is checked (correctness, anti-cheat) and then trained under a fixed budget
in isolated child processes; the harness scores it itself (val_bpb) and records every run.
"""

__version__ = "0.1.0"
