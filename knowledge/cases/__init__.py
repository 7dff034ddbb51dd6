"""Regression cases: questions a knowledge base must keep handling as expected, and the changes they check."""
