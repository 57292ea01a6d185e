"""Moved to featcache.heads.feed; this re-export keeps fusion.py working until it imports from there."""
from .heads.feed import FeatureSplit  # noqa: F401
