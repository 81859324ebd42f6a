"""Head office (`storesight hq`): the chain's stores push incidents, hourly roll-ups, POS totals and camera health;
PostgreSQL keeps them; dashboards, feedback and the ROI report read them. A separate service: it imports the
kernel, pure config models and the shared login only, never the bridge's pipeline, inference or adapters."""
