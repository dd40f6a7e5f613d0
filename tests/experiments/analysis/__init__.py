"""Tests of experiments/analysis (leap analyze)."""
