"""Fairness: bias probes over identity terms and their audit."""
