"""Provider adapters: one module per provider family (see registry.py)."""
