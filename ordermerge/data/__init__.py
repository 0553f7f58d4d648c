"""Tasks, their rows, and the data orders of the sub-model runs."""
