"""Test support: starting real processes (Envoy, sample servers, Redis, kmock) on loopback."""
