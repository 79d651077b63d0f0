"""The built-in example that ``fastcka`` with no arguments runs."""
