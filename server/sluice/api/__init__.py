"""The gRPC face of Sluice: the only package that knows protobuf."""
