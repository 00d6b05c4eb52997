"""Board profiles, flashing over SSH and remote benchmarks (installed as ``edgeface.devices``)."""
