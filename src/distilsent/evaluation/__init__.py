"""Evaluation: metrics, reports, comparisons and temperature calibration."""
