"""core.privacy without Ray: pseudonym shape and determinism, keys from the environment or the
generated demo key (mode 0600, reused), rotation, malformed keys, tombstones.

    pytest -q tests/core/test_privacy.py
"""

from __future__ import annotations

import os
import pickle
import stat

import pytest

from core.config import ShopgraphConfig
from core.privacy import (
    PSEUDONYM,
    Key,
    PrivacyError,
    Pseudonymizer,
    TombstoneStore,
    erase_user,
    parse_keys,
)

ENV = "SHOPGRAPH_PSEUDONYM_KEYS"
OLD = "k1:" + "a" * 64
NEW = "k2:" + "b" * 64


def _cfg(root, **privacy) -> ShopgraphConfig:
    return ShopgraphConfig.model_validate({"artifacts": {"root": str(root)}, "privacy": privacy})


def test_a_pseudonym_is_keyed_deterministic_and_128_bits(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, OLD)
    pz = Pseudonymizer.from_config(_cfg(tmp_path))
    a = pz.user_key("jane.doe@example.com")
    assert PSEUDONYM.match(a) and a.startswith("u_k1_") and len(a.rsplit("_", 1)[1]) == 32
    assert a == pz.user_key("jane.doe@example.com") != pz.user_key("jane.doe@example.co")
    other = Pseudonymizer(parse_keys("k1:" + "c" * 64, "test"))  # same kid, another secret
    assert other.user_key("jane.doe@example.com") != a
    assert "jane" not in a and pz.is_pseudonym(a) and not pz.is_pseudonym("u_k9_" + "0" * 32)
    assert "a" * 64 not in repr(pz) and "a" * 64 not in repr(pz.keys)  # secrets never printed
    again = pickle.loads(pickle.dumps(pz))  # crosses into Ray Data tasks as an argument
    assert again.user_key("jane.doe@example.com") == a


def test_rotation_hashes_new_ids_with_the_first_key_and_keeps_the_old_ones_for_lookups(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, OLD)
    before = Pseudonymizer.from_config(_cfg(tmp_path)).user_key("u42")
    monkeypatch.setenv(ENV, f"{NEW}, {OLD}")
    pz = Pseudonymizer.from_config(_cfg(tmp_path))
    assert pz.current.kid == "k2" and pz.kids == ["k2", "k1"]
    keys = pz.all_keys("u42")
    assert list(keys) == ["k2", "k1"] and keys["k1"] == before and keys["k2"] == pz.user_key("u42") != before


@pytest.mark.parametrize(
    "value, needle",
    [
        ("", "is empty"),
        ("nokid", "kid:secret"),
        ("K1:" + "a" * 64, "kid:secret"),  # kids are lowercase
        ("k1:short", "at least 16"),
        (f"{OLD},{OLD}", "appears twice"),
    ],
)
def test_malformed_keys_are_refused_naming_the_variable(monkeypatch, tmp_path, value, needle):
    monkeypatch.setenv(ENV, value)
    if not value:  # an empty variable counts as unset: the generated key is used
        assert Pseudonymizer.from_config(_cfg(tmp_path)).current.kid == "d1"
        with pytest.raises(PrivacyError, match="is empty"):
            parse_keys(value, f"${ENV}")
        return
    with pytest.raises(PrivacyError, match=needle) as e:
        Pseudonymizer.from_config(_cfg(tmp_path))
    assert ENV in str(e.value) and "a" * 64 not in str(e.value)


def test_without_a_variable_a_key_is_generated_once_with_mode_0600_and_reused(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV, raising=False)
    cfg = _cfg(tmp_path)
    first = Pseudonymizer.from_config(cfg)
    path = tmp_path / "privacy" / "pseudonym.key"
    assert path.is_file() and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # Another process sharing artifacts.root (the server, the next stage) gets the same key.
    assert Pseudonymizer.from_config(cfg).user_key("u42") == first.user_key("u42")
    # A cluster profile refuses to run without the Secret's variable.
    with pytest.raises(PrivacyError, match="require_key"):
        Pseudonymizer.from_config(_cfg(tmp_path / "other", require_key=True))
    # The variable wins over the file.
    monkeypatch.setenv(ENV, OLD)
    assert Pseudonymizer.from_config(cfg).current.kid == "k1"


def test_tombstones_hold_pseudonyms_only_and_reach_other_readers(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, f"{NEW},{OLD}")
    cfg = _cfg(tmp_path)
    reader = TombstoneStore(str(tmp_path), refresh_s=0)
    assert reader.keys() == set()
    got = erase_user(cfg, "  jane.doe@example.com ")
    assert got["kids"] == ["k2", "k1"] and got["new_tombstones"] == 2
    pz = Pseudonymizer.from_config(cfg)
    assert reader.keys() == set(pz.all_keys("jane.doe@example.com").values())
    assert erase_user(cfg, "jane.doe@example.com")["new_tombstones"] == 0  # idempotent
    text = (tmp_path / "privacy" / "tombstones.jsonl").read_text()
    assert "jane" not in text and '"kid": "k1"' in text
    assert reader.status([pz.user_key("jane.doe@example.com")])["kid"] == "k2"
    with pytest.raises(ValueError, match="--user-id"):
        erase_user(cfg, "  ")


def test_a_pseudonym_column_hashes_each_distinct_id_once():
    import pyarrow as pa

    pz = Pseudonymizer([Key("t1", b"0123456789abcdef0123")])
    out = pz.column(pa.chunked_array([["a", "b"], ["a", None]]))
    assert out.to_pylist() == [pz.user_key("a"), pz.user_key("b"), pz.user_key("a"), None]


def test_erasures_at_the_same_instant_are_all_recorded(tmp_path):
    # each store object stands for another replica or CLI process writing the same file
    from concurrent.futures import ThreadPoolExecutor

    from core.privacy import TombstoneStore

    def erase(i: int) -> int:
        return TombstoneStore(str(tmp_path)).add({"k1": f"u_k1_{i:032x}"})

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(erase, range(40))) == 40
    assert len(TombstoneStore(str(tmp_path)).keys()) == 40
