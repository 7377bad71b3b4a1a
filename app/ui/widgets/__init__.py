"""The studio's Qt widgets. Each paints plain data handed to it by the window (GUI thread only)."""
