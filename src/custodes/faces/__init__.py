"""Faces beyond detection: sealed descriptors of people seen, the gallery, vector search."""
