"""The scale table: ahead-of-time TPU compiles of the published-size recipes (README.md)."""
