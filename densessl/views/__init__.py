"""Views: crops with exact geometry (boxes, flips, constraints) and their batching."""
