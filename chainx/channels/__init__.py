"""Channel analysis (one rule per op type) and the surgery that rebuilds the graph smaller."""
