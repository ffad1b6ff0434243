"""Clinical measurements from LV masks: landmarks (geometry.py), volumes and EF (volumes.py)."""
