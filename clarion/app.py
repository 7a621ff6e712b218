"""The worker's app: `faust -A clarion.app worker -l info` (needs CLARION_KAFKA).

Each agent is also a name of this module (`clarion.app.<agent name, dots as underscores,
without "clarion.">`, e.g. `critical_dedupe_route`), so the faust CLI can send to it:
`faust -A clarion.app send @clarion.app.critical_dedupe_route '<request JSON>' --key client/user_id`.
"""

from clarion.topology.app import agent_symbols, create_app

app, topology = create_app()
globals().update(agent_symbols(app))
