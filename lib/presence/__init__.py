"""Shared library of the SIP presence services: SIP model, bus events, settings."""
