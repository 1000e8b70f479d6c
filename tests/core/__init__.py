"""The framework-free dogpile core (dogpile.core 0.4.1's API)."""
