"""The worker's app: `faust -A clarion.app worker -l info` (needs CLARION_KAFKA)."""

from clarion.topology.app import create_app

app, topology = create_app()
