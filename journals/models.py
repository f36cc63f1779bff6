"""Models of the journals app."""
