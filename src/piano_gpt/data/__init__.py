"""Data: sources (demo, MAESTRO folder, HF), records cut at pauses, token shards, training samples."""
