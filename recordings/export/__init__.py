"""Exports of episodes for other tools: an MP4 per episode (`mp4`), a selection as a LeRobot
dataset v3.0 (`lerobot`); `video` is the PyAV encoder both use."""
