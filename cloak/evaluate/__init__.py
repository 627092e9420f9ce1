"""Protection benchmark: attacker-side protocol, metrics, report."""
