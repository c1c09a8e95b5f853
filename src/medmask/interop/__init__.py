"""Converters between medmask and other formats (NIfTI). Optional extras; never imported by the core."""
