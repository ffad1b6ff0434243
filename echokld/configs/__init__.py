"""Configs: `base` holds every field; one file per model changes only what differs.

Each model file's `get_config(arg)` takes '' (quick setting) or 'paper' (§3.3 protocol).
"""
