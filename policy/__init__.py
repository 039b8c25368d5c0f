"""The yolo-fleet policy pack: rules in policy/policies.py, the pack itself in policy/__main__.py."""
