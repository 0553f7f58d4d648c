"""Tables and figures from evaluation records."""
