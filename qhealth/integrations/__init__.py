"""Integrations with the worker pools people already run, one module each.

Each module imports its framework when it is used, never at ``import qhealth``.
"""
