"""The HTTP side: health, readiness, metrics, the incidents API and the console."""
