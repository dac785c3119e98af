"""Experiments: results of a route's variants, and the adaptive traffic split."""
