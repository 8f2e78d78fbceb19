"""The Envoy ext_proc router: the pure routing decision, the grpclib servicer, backend sessions, xDS."""
