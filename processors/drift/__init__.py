"""The drift processor's parts: detectors with explicit state, references, signals, the engine."""
