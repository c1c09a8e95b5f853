"""Converters between medmask and other formats (NIfTI); optional extras, not used by the core."""
