"""Node implementations grouped by category, one module per category.

Importing this package registers every implementation in
``base.IMPLEMENTATIONS``; the registry JSON (``loader/node_registry.json``)
describes the same types for validation.
"""
