"""Generated code for the sluice.v1 protos (do not edit)."""
