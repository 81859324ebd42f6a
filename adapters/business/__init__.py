"""Business-event sources: POS, access control and alarm panels, each handing events to its intake."""
