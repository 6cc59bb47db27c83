"""What decides the bits besides the source: pins, and the process environment they imply. No torch."""
