"""``sluice demo``: real events through every processor, analytics printed; one module per step."""
