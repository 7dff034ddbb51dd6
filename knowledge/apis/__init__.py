"""The knowledge managers' REST API under ``/api/v1/``: knowledge bases and their FAQ entries."""
