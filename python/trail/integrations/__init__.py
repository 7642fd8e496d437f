"""Adapters that put TRAIL inside other serving engines (each an optional extra)."""
