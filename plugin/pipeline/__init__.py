"""One camera's path: frames through the motion gate, the detector, the tracker, zones and rules, with tamper, health
and presence; supervised with restarts."""
