"""The course's models, one per module."""
