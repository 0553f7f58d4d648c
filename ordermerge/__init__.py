"""ordermerge: fine-tune one base model on K data orders, merge, and measure."""
__version__ = "0.1.0"
