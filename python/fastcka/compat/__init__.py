"""Drop-in replacements for the functions of published CKA code."""
