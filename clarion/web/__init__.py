"""HTTP: the stateless public API (`api`) and the worker's table views (`status`)."""
