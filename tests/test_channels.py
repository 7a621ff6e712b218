"""The channel registry (clarion/schemas/channels.py) is whole: every row names things that exist."""

from __future__ import annotations

import importlib
from typing import get_args

import msgspec
import pytest

from clarion.providers.registry import build_clients, client_class
from clarion.schemas.channels import CHANNELS, REGISTRY, Channel, same_address
from clarion.schemas.records import UserProfile
from clarion.schemas.validation import TEMPLATE_PARTS
from clarion.tables.suppression import suppresses
from clarion.tables.users import addresses_for
from clarion.topology.settings import Settings


def test_the_channel_type_is_the_registry() -> None:
    assert set(get_args(Channel)) == set(CHANNELS)


@pytest.mark.parametrize("name", CHANNELS)
def test_each_row_names_a_client_a_simulator_parts_and_an_address_field(name: str) -> None:
    spec = REGISTRY[name]
    assert client_class(spec).channel == name
    assert importlib.import_module(spec.simulator).__name__ == spec.simulator
    assert set(spec.parts) <= set(TEMPLATE_PARTS)
    assert spec.address_field in {f.name for f in msgspec.structs.fields(UserProfile)}


def test_build_clients_makes_one_client_per_channel() -> None:
    clients = build_clients(Settings())
    assert {name: client.channel for name, client in clients.items()} == {name: name for name in CHANNELS}


def test_addresses_come_from_the_field_the_registry_names() -> None:
    user = UserProfile(client_id="c", user_id="u", email="A@x.io", phone="+14155550100", apns_tokens=["t1", "t2"])
    assert addresses_for(user, "email") == ["A@x.io"]
    assert addresses_for(user, "sms") == ["+14155550100"]
    assert addresses_for(user, "apns") == ["t1", "t2"]
    assert addresses_for(user, "fcm") == []
    with pytest.raises(ValueError, match="unknown channel"):
        addresses_for(user, "pigeon")


def test_suppression_and_address_matching_follow_the_registry() -> None:
    assert suppresses("apns", "410 Unregistered") and suppresses("fcm", "404 UNREGISTERED")
    assert suppresses("sms", "21610 unsubscribed") and not suppresses("email", "21610")
    assert same_address(REGISTRY["email"], "A@x.io", "a@X.io")
    assert not same_address(REGISTRY["apns"], "AbC", "abc")
