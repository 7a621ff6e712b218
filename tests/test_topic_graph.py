"""The catalog's readers are the agents faust runs, and every agent says what it does (`faust agents`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from clarion.topology.app import create_app
from clarion.topology.catalog import READERS, STAGES, WRITERS
from clarion.topology.settings import Settings


@pytest.fixture(scope="module")
def wired(tmp_path_factory: pytest.TempPathFactory):
    settings = Settings(kafka="127.0.0.1:1", data_dir=str(tmp_path_factory.mktemp("data")), web_port=1)
    return create_app(settings)


def agent_topics(wired) -> dict[str, tuple[str, set[str]]]:
    """Each agent: its stage (the agents/<stage>.py it is defined in) and the topics it consumes."""
    app, _ = wired
    return {
        name: (Path(sys.modules[agent.fun.__module__].__file__).stem, set(agent.channel.topics))
        for name, agent in app.agents.items()
    }


def test_every_agent_is_a_declared_reader_of_what_it_consumes(wired) -> None:
    _, topo = wired
    by_topic = {spec.topic: spec for spec in topo.declared.specs.values()}
    for name, (stage, topics) in agent_topics(wired).items():
        assert stage in STAGES, name
        for topic in topics:
            readers = by_topic[topic].readers
            assert stage in readers, f"{name} consumes {topic}; the catalog's readers: {readers}"


def test_every_stage_the_catalog_names_as_reader_has_an_agent_on_the_topic(wired) -> None:
    _, topo = wired
    consumed = {(stage, topic) for stage, topics in agent_topics(wired).values() for topic in topics}
    for spec in topo.declared.specs.values():
        for reader in spec.readers:
            assert reader in STAGES or reader in READERS, (spec.name, reader)
            if reader in STAGES:
                assert (reader, spec.topic) in consumed, f"no {reader} agent consumes {spec.topic}"
        for writer in spec.writers:
            assert writer in STAGES or writer in WRITERS, (spec.name, writer)


def test_every_agent_describes_itself(wired) -> None:
    app, _ = wired
    undescribed = [name for name, agent in app.agents.items() if not (agent.help or "").strip()]
    assert not undescribed, f"agents without a docstring (faust agents shows <N/A>): {undescribed}"
