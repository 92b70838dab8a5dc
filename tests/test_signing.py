"""Weights bound to a signed manifest: the tensor digest, the manifest sha256 in the metadata, the DSSE-signed
in-toto statement beside each checkpoint, `sao manifest verify` on every kind of tampering, keys that never leak,
signed releases, and the demo's own key."""
import base64
import hashlib
import json
import pathlib
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sao import cli, signing
from sao.train.checkpoint import save_checkpoint, state_dict_digest
from sao.train.manifest import ManifestError, build_manifest, manifest_bytes, manifest_sha256, verify


# --- a tiny checkpoint, written by the trainer's save path ----------------------------------------------------------

def _shards_build(root: pathlib.Path, set_: str = "diffusion", first: int = 1) -> pathlib.Path:
    """The smallest complete shards build build_manifest reads: plan.json, index.parquet and two shard files."""
    b = root / "b"
    (b / set_).mkdir(parents=True)
    rows = []
    for i in range(2):
        name = f"{set_}/shard-{i:06d}.tar"
        (b / name).write_bytes(f"shard {i}".encode() * 100)
        rows.append({"recording_id": f"freesound:{i + first}", "set": set_, "shard": name,
                     "shard_sha256": hashlib.sha256((b / name).read_bytes()).hexdigest(), "license": "cc0-1.0"})
    pq.write_table(pa.Table.from_pylist(rows), b / "index.parquet")
    (b / "plan.json").write_text(json.dumps({"status": "complete", "name": "b", "plan_hash": "p1",
                                             "release": {"name": "r1", "content_sha256": "0" * 64}}))
    return b


def _weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"layer.weight": torch.randn(4, 3, generator=g), "layer.bias": torch.randn(4, generator=g),
            "half": torch.randn(2, 2, generator=g).to(torch.bfloat16), "count": torch.arange(3)}


def _save(out, shards_dir, key, step=1, seed=0):
    man = build_manifest(None, str(shards_dir), ["diffusion"], stage="dit", step=step)
    man["training"] = {"steps": step}
    return save_checkpoint(out, step, {"raw": _weights(seed), "ema": _weights(seed + 100)}, {"step": step}, man,
                           signing_key=key)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    mine = signing.generate_keys(d / "mine")
    other = signing.generate_keys(d / "other")
    return {"key": signing.load_private_key(mine["private"]), "pub": mine["public"], "priv": mine["private"],
            "other_pub": other["public"], "other_key": signing.load_private_key(other["private"])}


@pytest.fixture
def ckpt(tmp_path, keys):
    paths = _save(tmp_path / "train", _shards_build(tmp_path / "shards"), keys["key"])
    return pathlib.Path(paths["raw"])


def _pub(keys, which="pub"):
    return signing.load_public_key(keys[which])


def _metadata(path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata())


def _rewrite(path, tensors=None, **meta):
    """Rewrite a checkpoint's file (tensors and/or metadata), as someone tampering with it would."""
    old = _metadata(path)
    save_file(tensors if tensors is not None else load_file(str(path)), str(path), metadata={**old, **meta})


def _fails(ckpt, keys, match, capsys, which="pub"):
    """verify raises ManifestError naming the problem, and the CLI prints one line and exits 1."""
    with pytest.raises(ManifestError, match=match):
        verify(ckpt, public_key=_pub(keys, which))
    capsys.readouterr()
    assert cli.main(["manifest", "verify", str(ckpt), "--key", keys[which]]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "FAILED" in err and "Traceback" not in err, err
    return err


def test_untouched_checkpoint_verifies_with_its_key_from_any_folder(ckpt, keys, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path.parent)                 # not the training folder
    for p in (ckpt, ckpt.with_name(ckpt.name.replace("-raw", "-ema"))):
        out = verify(p, public_key=_pub(keys))
        assert out["signed_by"] == signing.keyid(_pub(keys)) and out["shards_checked"] == 2
        assert cli.main(["manifest", "verify", str(p), "--key", keys["pub"]]) == 0
        assert "signature: valid" in capsys.readouterr().out


def test_shard_locations_are_stored_absolute_so_verify_works_from_elsewhere(tmp_path, keys, monkeypatch):
    _shards_build(tmp_path / "shards")
    monkeypatch.chdir(tmp_path)
    paths = _save("train", "shards/b", keys["key"])   # relative, as a training command line gives them
    man = json.loads(pathlib.Path(paths["raw"]).with_suffix(".manifest.json").read_text())
    assert man["shards_build"]["location"] == str((tmp_path / "shards" / "b").resolve())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert verify(tmp_path / paths["raw"], public_key=_pub(keys))["shards_checked"] == 2


def test_changed_tensor_fails(ckpt, keys, capsys):
    sd = load_file(str(ckpt))
    sd["layer.bias"][0] += 1e-3
    _rewrite(ckpt, sd)                                 # same metadata, one value changed
    assert "tensor digest" in _fails(ckpt, keys, "tensors were changed", capsys)
    assert cli.main(["manifest", "verify", str(ckpt)]) == 1   # caught without a key too


def test_a_flipped_byte_in_the_data_fails(ckpt, keys, capsys):
    data = bytearray(ckpt.read_bytes())
    data[-1] ^= 1
    ckpt.write_bytes(bytes(data))
    _fails(ckpt, keys, "tensors were changed", capsys)


def test_changed_manifest_fails_even_with_the_metadata_sha256_rewritten(ckpt, keys, capsys):
    mp = ckpt.with_suffix(".manifest.json")
    man = json.loads(mp.read_text())
    man["recordings"][0]["license"] = "cc-by-4.0"
    mp.write_bytes(manifest_bytes(man))
    _rewrite(ckpt, sao_manifest_sha256=manifest_sha256(man))
    _fails(ckpt, keys, "does not cover this manifest", capsys)
    # without a key the files agree with each other, and the output says that no signature was checked
    assert cli.main(["manifest", "verify", str(ckpt)]) == 0
    assert "NOT CHECKED" in capsys.readouterr().out


def test_changed_manifest_without_rewriting_the_metadata_fails(ckpt, keys, capsys):
    mp = ckpt.with_suffix(".manifest.json")
    mp.write_text(mp.read_text().replace('"CC0-1.0"', '"CC-BY-3.0"', 1))
    _fails(ckpt, keys, "altered", capsys)


def test_swapped_checkpoint_fails(tmp_path, ckpt, keys, capsys):
    other = _save(tmp_path / "other", tmp_path / "shards" / "b", keys["key"], step=2, seed=7)
    _rewrite(ckpt, load_file(other["raw"]))            # another checkpoint's tensors under this metadata
    _fails(ckpt, keys, "another checkpoint's", capsys)
    # the whole of the other checkpoint's signed set put in this one's place: it names the other file, and fails
    for suffix in (".safetensors", ".manifest.json", ".intoto.json"):
        shutil.copy(pathlib.Path(other["raw"]).with_suffix(suffix), ckpt.with_suffix(suffix))
    assert json.loads(ckpt.with_suffix(".manifest.json").read_text())["weights"]["file"] == "step-0000002-raw.safetensors"
    assert "'step-0000002-raw.safetensors', not step-0000001-raw.safetensors" in _fails(
        ckpt, keys, "another checkpoint's files under this name", capsys)
    with pytest.raises(ManifestError, match="another checkpoint's files"):
        verify(ckpt)                                   # caught without a key too


def test_swapped_or_renamed_trio_fails_under_the_other_name(ckpt, keys, capsys):
    """Review finding 13: the ema trio copied to the raw names (or a trio renamed) verified under the new name."""
    ema = ckpt.with_name(ckpt.name.replace("-raw", "-ema"))
    for suffix in (".safetensors", ".manifest.json", ".intoto.json"):
        shutil.copy(ema.with_suffix(suffix), ckpt.with_suffix(suffix))
    _fails(ckpt, keys, "is for 'step-0000001-ema.safetensors', not step-0000001-raw.safetensors", capsys)
    renamed = ckpt.with_name("step-0000009-ema.safetensors")
    for suffix in (".safetensors", ".manifest.json", ".intoto.json"):
        shutil.move(ema.with_suffix(suffix), renamed.with_suffix(suffix))
    _fails(renamed, keys, "another checkpoint's files under this name", capsys)
    # a signed statement about another file name fails even where the manifest names this one
    for suffix in (".safetensors", ".manifest.json", ".intoto.json"):
        shutil.move(renamed.with_suffix(suffix), ema.with_suffix(suffix))
    assert verify(ema, public_key=_pub(keys))["signed_by"]
    env = ema.with_suffix(".intoto.json")
    stmt = json.loads(base64.b64decode(json.loads(env.read_text())["payload"]))
    stmt["subject"][0]["name"] = "step-0000009-ema.safetensors"
    env.write_text(json.dumps(signing.sign_statement(stmt, keys["key"])))
    _fails(ema, keys, "is about 'step-0000009-ema.safetensors', not step-0000001-ema.safetensors", capsys)


def _drop(m, path):
    *head, last = path.split(".")
    for part in head:
        m = m[part]
    del m[last]


@pytest.mark.parametrize("change, match", [
    (lambda m: {}, "missing field 'format'"),
    (lambda m: [], "not a JSON object"),
    (lambda m: _drop(m, "shards_build.location"), "missing field 'shards_build.location'"),
    (lambda m: _drop(m, "weights.sha256"), "missing field 'weights.sha256'"),
    (lambda m: _drop(m, "shards"), "missing field 'shards'"),
    (lambda m: _drop(m, "counts"), "missing field 'counts.recordings'"),
    (lambda m: _drop(m, "signing"), "missing field 'signing.status'"),
    (lambda m: m["shards"][0].update(name="../../../etc/passwd"), "not a path inside the build"),
    (lambda m: m["shards"][0].update(sha256=5), r"'shards\[0\].sha256' must be str"),
    (lambda m: m["shards_build"].update(location="shards/b"), "relative path"),
    (lambda m: m.update(step="1"), "'step' must be int"),
    (lambda m: m.update(format="sao-attribution-manifest/1"), "older manifests"),
])
def test_malformed_manifest_names_the_field(ckpt, keys, capsys, change, match):
    mp = ckpt.with_suffix(".manifest.json")
    man = json.loads(mp.read_text())
    new = change(man)
    man = man if new is None else new
    mp.write_text(json.dumps(man))
    _rewrite(ckpt, sao_manifest_sha256=hashlib.sha256(signing.canonical_json(man)).hexdigest())
    _fails(ckpt, keys, match, capsys)


@pytest.mark.parametrize("data, match", [
    (b"", "empty file"), (b"   \n", "empty file"), (b"{not json", "not valid JSON"),
    (b'{"format": 1, "format": 2}', "duplicate key"), (b'{"step": NaN}', "not valid JSON"), (b"\xff\xfe", "UTF-8"),
])
def test_empty_or_unparsable_manifest_fails_cleanly(ckpt, keys, capsys, data, match):
    ckpt.with_suffix(".manifest.json").write_bytes(data)
    _fails(ckpt, keys, match, capsys)


def test_missing_signature_fails(ckpt, keys, capsys, tmp_path):
    env = ckpt.with_suffix(".intoto.json")
    doc = json.loads(env.read_text())
    env.write_text(json.dumps(dict(doc, signatures=[])))
    assert "unsigned" in _fails(ckpt, keys, "unsigned", capsys)
    env.unlink()
    assert "unsigned" in _fails(ckpt, keys, "unsigned", capsys)
    # a checkpoint saved with no key says so, and fails verification with a key
    plain = pathlib.Path(_save(tmp_path / "plain", tmp_path / "shards" / "b", None)["raw"])
    assert json.loads(plain.with_suffix(".manifest.json").read_text())["signing"] == {"status": "unsigned"}
    assert not plain.with_suffix(".intoto.json").exists()
    _fails(plain, keys, "unsigned", capsys)
    assert cli.main(["manifest", "verify", str(plain)]) == 0
    assert "NOT CHECKED" in capsys.readouterr().out and verify(plain)["signed_by"] is None


def test_wrong_key_or_signature_fails(ckpt, keys, capsys):
    assert "wrong key" in _fails(ckpt, keys, "no signature verifies", capsys, which="other_pub")
    env = ckpt.with_suffix(".intoto.json")
    doc = json.loads(env.read_text())
    sig = bytearray(base64.b64decode(doc["signatures"][0]["sig"]))
    sig[0] ^= 1
    env.write_text(json.dumps(dict(doc, signatures=[{"keyid": "x", "sig": base64.b64encode(bytes(sig)).decode()}])))
    _fails(ckpt, keys, "no signature verifies", capsys)
    # a statement re-signed by another key cannot pass for ours, and an edited payload breaks the signature
    stmt = json.loads(base64.b64decode(doc["payload"]))
    env.write_text(json.dumps(signing.sign_statement(stmt, keys["other_key"])))
    _fails(ckpt, keys, "no signature verifies", capsys)
    stmt["predicate"]["step"] = 99
    env.write_text(json.dumps(dict(doc, payload=base64.b64encode(signing.canonical_json(stmt)).decode())))
    _fails(ckpt, keys, "no signature verifies", capsys)
    assert cli.main(["manifest", "verify", str(ckpt), "--key", keys["priv"]]) == 1   # a private key is refused
    assert "is a private key" in capsys.readouterr().err


def test_statement_is_in_toto_v1_in_a_dsse_envelope(ckpt, keys):
    doc = json.loads(ckpt.with_suffix(".intoto.json").read_text())
    assert doc["payloadType"] == "application/vnd.in-toto+json"
    payload = base64.b64decode(doc["payload"])
    # DSSE v1 PAE, spelled out from the specification
    pae = b"DSSEv1 28 application/vnd.in-toto+json " + str(len(payload)).encode() + b" " + payload
    _pub(keys).verify(base64.b64decode(doc["signatures"][0]["sig"]), pae)
    assert doc["signatures"][0]["keyid"] == signing.keyid(_pub(keys))
    stmt = json.loads(payload)
    man = json.loads(ckpt.with_suffix(".manifest.json").read_text())
    assert stmt["_type"] == "https://in-toto.io/Statement/v1" and stmt["predicateType"].startswith("https://sao.")
    assert stmt["subject"] == [{"name": ckpt.name, "digest": {"sha256": man["weights"]["sha256"]}}]
    assert stmt["predicate"]["manifest"] == {"name": ckpt.with_suffix(".manifest.json").name,
                                             "sha256": _metadata(ckpt)["sao_manifest_sha256"]}
    assert stmt["predicate"]["release"] == {"name": "r1", "content_sha256": "0" * 64}
    assert man["signing"]["keyid"] == signing.keyid(_pub(keys))


def test_tensor_digest_ignores_header_layout_and_binds_name_dtype_shape_bytes(tmp_path):
    sd = _weights(0)
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file(sd, str(a), metadata={"x": "1"})
    save_file(dict(reversed(list(sd.items()))), str(b), metadata={"other": "metadata", "y": "2"})
    assert a.read_bytes() != b.read_bytes()
    da, db = signing.safetensors_digest(a)[0], signing.safetensors_digest(b)[0]
    assert da == db == state_dict_digest(sd)
    w = sd["layer.weight"]
    for changed in ({**sd, "layer.weight": w.reshape(3, 4)}, {**sd, "layer.weight": w.view(torch.int32)},
                    {**{k: v for k, v in sd.items() if k != "layer.weight"}, "layer.weigh": w}):
        assert state_dict_digest(changed) != da


def test_private_key_never_leaks_into_outputs_logs_or_messages(tmp_path, capsys, caplog, monkeypatch):
    assert cli.main(["keys", "generate", "--out", str(tmp_path / "k")]) == 0
    priv = tmp_path / "k" / "signing.key"
    assert (priv.stat().st_mode & 0o777) == 0o600
    pem = priv.read_bytes()
    body = [ln for ln in pem.decode().splitlines() if not ln.startswith("-----")]
    raw = signing.load_private_key(priv).private_bytes_raw()
    secrets = [pem, raw, *(ln.encode() for ln in body)]
    assert cli.main(["keys", "generate", "--out", str(tmp_path / "k")]) == 1     # never replaced
    assert pem == priv.read_bytes()
    built = _shards_build(tmp_path / "shards")
    monkeypatch.setenv("SAO_SIGNING_KEY", pem.decode())                          # the PEM text itself
    _save(tmp_path / "train", built, signing.load_signing_key())
    monkeypatch.setenv("SAO_SIGNING_KEY", str(priv))                              # a path
    _save(tmp_path / "train2", built, signing.load_signing_key())
    assert verify(tmp_path / "train2" / "step-0000001-raw.safetensors", public_key=_pub(
        {"pub": tmp_path / "k" / "signing.pub"}))["signed_by"]
    bad = tmp_path / "bad.key"
    bad.write_text("-----BEGIN PRIVATE KEY-----\n" + body[0][::-1] + "\n-----END PRIVATE KEY-----\n")
    with pytest.raises(signing.SigningError) as exc:
        signing.load_private_key(bad)
    assert body[0][::-1] not in str(exc.value)
    from sao import config as config_mod
    cfg = config_mod.from_dict({"signing": {"key_file": str(priv)}})
    assert all(s in config_mod.secrets(cfg) for s in body if len(s) >= 16)      # redacted wherever runs record
    out = capsys.readouterr()
    text = [out.out.encode(), out.err.encode(), caplog.text.encode()]
    files = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.parent.name != "k" and p != bad]
    assert len(files) >= 10
    for blob in text + files:
        assert not any(s in blob for s in secrets)


def test_signing_config_section_is_checked(tmp_path):
    from sao import config as config_mod
    with pytest.raises(config_mod.ConfigError, match=r"\[signing\].nope"):
        config_mod.from_dict({"signing": {"nope": 1}})
    cfg = config_mod.from_dict({"signing": {"key_file": "keys/signing.key"}}, root=tmp_path)
    assert signing.key_file_for(cfg) == str(tmp_path / "keys" / "signing.key")
    assert signing.key_file_for(cfg, "cli.key") == "cli.key"
    assert cfg.config_hash() == config_mod.from_dict({}).config_hash()   # who signs changes no computed output


def test_demo_generates_its_own_key_under_its_data_folder(tmp_path):
    from sao import config as config_mod
    from sao.demo import DemoContext, step_signing_key
    cfg = config_mod.from_dict({"paths": {"data_dir": "demo-data"}}, root=tmp_path)
    ctx = DemoContext(cfg)
    out = step_signing_key(ctx)
    pub = tmp_path / "demo-data" / "demo-keys" / "signing.pub"
    assert ctx.outputs["demo public key"] == str(pub) and str(pub) in out["public key"]
    assert ((tmp_path / "demo-data" / "demo-keys" / "signing.key").stat().st_mode & 0o777) == 0o600
    first = signing.keyid(ctx.signing_key.public_key())
    step_signing_key(ctx)                             # a second demo run keeps its key
    assert signing.keyid(ctx.signing_key.public_key()) == first == signing.keyid(signing.load_public_key(pub))
    pub.unlink()
    step_signing_key(ctx)                             # the public half is written again from the kept key
    assert signing.keyid(signing.load_public_key(pub)) == first
    assert cfg.signing.key_file == ""                 # never a production default


# --- signed releases ----------------------------------------------------------------------------------------------

from .test_shards import world  # noqa: E402,F401  (the crawled, gated catalogue with audio)


def test_release_signature_verifies_and_catches_tampering(world, tmp_path, keys, capsys):  # noqa: F811
    from sao.attribution.release_signature import signature_path, verify_release
    from sao.catalog import Catalog
    shutil.copy(world / "c.duckdb", tmp_path / "c.duckdb")
    conf = tmp_path / "sao.toml"
    conf.write_text(f'[paths]\ncatalog = "{tmp_path / "c.duckdb"}"\nreleases = "{tmp_path / "releases"}"\n'
                    f'[shards]\nrequired_stages = ["license_gate"]\n[signing]\nkey_file = "{keys["priv"]}"\n')
    assert cli.main(["--config", str(conf), "release", "create", "r1"]) == 0
    assert "signature: " + str(tmp_path / "releases" / "r1.intoto.json") in capsys.readouterr().out
    assert cli.main(["--config", str(conf), "release", "verify", "r1", "--key", keys["pub"]]) == 0
    assert signature_path(tmp_path / "releases", "r1").parent == tmp_path / "releases"  # a rebuilt report keeps it
    assert cli.main(["--config", str(conf), "release", "verify", "r1", "--key", keys["other_pub"]]) == 1
    root = tmp_path / "releases"
    with Catalog(tmp_path / "c.duckdb") as cat:
        assert verify_release(cat, "r1", root, _pub(keys))["recordings"] > 0
        # an item changed after creation, even with the recorded sha256 rewritten to match
        rid = cat.query("SELECT recording_id FROM release_items WHERE release_name = 'r1' LIMIT 1")[0]["recording_id"]
        cat.con.execute("UPDATE release_items SET author = 'someone else' WHERE release_name = 'r1' AND "
                        "recording_id = ?", [rid])
        with pytest.raises(signing.SigningError, match="changed after creation"):
            verify_release(cat, "r1", root, _pub(keys))
        from sao.attribution import policy
        from sao.attribution.release import release_items
        sha = policy.content_sha256(release_items(cat, "r1").values())
        cat.con.execute("UPDATE releases SET content_sha256 = ? WHERE name = 'r1'", [sha])
        with pytest.raises(signing.SigningError, match="signs other content"):
            verify_release(cat, "r1", root, _pub(keys))
        signature_path(root, "r1").unlink()
        with pytest.raises(signing.SigningError, match="unsigned"):
            verify_release(cat, "r1", root, _pub(keys))
    capsys.readouterr()
    assert cli.main(["--config", str(conf), "release", "verify", "r1", "--key", keys["pub"]]) == 1
    assert "FAILED" in capsys.readouterr().err


# --- the trainer signs what it writes -------------------------------------------------------------------------------

from .test_train import shards  # noqa: E402,F401  (a real shards build of the crawled catalogue)


def test_trainer_save_path_signs_with_the_key_file_from_the_command_line(shards, tmp_path, keys, capsys,  # noqa: F811
                                                                        monkeypatch):
    from sao.train import trainer
    monkeypatch.delenv("SAO_SIGNING_KEY", raising=False)
    seen = []
    monkeypatch.setattr(trainer, "train_vae", lambda s: seen.append(s) or {"step": 0})
    train = ["train", "vae", "--shards", str(shards / "s"), "--out", str(tmp_path / "vae"), "--steps", "1"]
    assert cli.main(train + ["--key-file", keys["priv"]]) == 0 and seen[-1].signing_key_file == keys["priv"]
    # the trainer's own checkpoint writer (trainer._Run.save): a bad key fails before any step, a good one signs
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    with pytest.raises(signing.SigningError, match="not an unencrypted PEM private key"):
        trainer._Run(trainer.TrainSettings(**{**seen[-1].__dict__, "signing_key_file": str(bad)}), "autoencoder", 4096)
    run = trainer._Run(seen[-1], "autoencoder", 4096)
    run.read = {run.rel(u) for u in run.urls[:1]}
    paths = run.save({"raw": _weights(0), "ema": _weights(1)}, {})
    ck = pathlib.Path(paths["ema"])
    capsys.readouterr()
    assert cli.main(["manifest", "verify", str(ck), "--key", keys["pub"]]) == 0
    assert "signature: valid" in capsys.readouterr().out
    man = json.loads(ck.with_suffix(".manifest.json").read_text())
    assert "signing_key_file" not in man["training"] and man["signing"]["status"] == "signed"
    assert len(man["shards"]) == 1 and keys["priv"] not in ck.with_suffix(".manifest.json").read_text()


# --- review findings 7, 8 and 9 -------------------------------------------------------------------------------------

def test_release_signature_covers_audio_sha_admitting_decisions_and_the_signed_predicate(
        world, tmp_path, keys):  # noqa: F811 - the `world` fixture, imported above
    """Review finding 7: an item's audio sha256 and admitting decisions, and the release's required stages and
    recording count, could be changed in the catalogue and the release still verified."""
    from sao.attribution import policy
    from sao.attribution.release import create_release, release_items
    from sao.attribution.release_signature import verify_release
    from sao.catalog import Catalog
    shutil.copy(world / "c.duckdb", tmp_path / "c.duckdb")
    root = tmp_path / "releases"
    with Catalog(tmp_path / "c.duckdb") as cat:
        out = create_release(cat, None, required_stages=["license_gate"], signatures_dir=root,
                             signing_key=keys["key"])
        name = out["name"]
        assert verify_release(cat, name, root, _pub(keys))["recordings"] == out["recordings"] > 1
        rid = sorted(release_items(cat, name))[0]
        stored = cat.query("SELECT * FROM release_items WHERE release_name = ? AND recording_id = ?", [name, rid])[0]
        # a fresh snapshot's {stage: decision id} and the stored JSON text of it hash alike
        assert policy.item_line(dict(stored, admitted_by=json.loads(stored["admitted_by"]))) == \
            policy.item_line(stored)
        sql = "UPDATE release_items SET {} = ? WHERE release_name = ? AND recording_id = ?"
        for col, value in (("content_sha256", "f" + "0" * 63), ("admitted_by", "{}"),
                           ("admitted_by", json.dumps({"license_gate": -1}))):
            cat.con.execute(sql.format(col), [value, name, rid])
            with pytest.raises(signing.SigningError, match="changed after creation"):
                verify_release(cat, name, root, _pub(keys))
            cat.con.execute(sql.format(col), [stored[col], name, rid])
        assert verify_release(cat, name, root, _pub(keys))
        # the predicate the signature makes about the release is compared with the releases row
        rel = cat.query("SELECT required_stages, n_recordings, config_hash, version FROM releases WHERE name = ?",
                        [name])[0]
        for col, value, match in (("required_stages", ["license_gate", "dedup"], "required_stages"),
                                  ("config_hash", "other", "config_hash"), ("version", 7, "version"),
                                  ("n_recordings", 1, "but the release records 1 recordings")):
            cat.con.execute(f"UPDATE releases SET {col} = ? WHERE name = ?", [value, name])
            with pytest.raises(signing.SigningError, match=match):
                verify_release(cat, name, root, _pub(keys))
            cat.con.execute(f"UPDATE releases SET {col} = ? WHERE name = ?", [rel[col], name])
        assert verify_release(cat, name, root, _pub(keys))["recordings"] == out["recordings"]


def test_train_flow_signs_with_the_configured_key_file(tmp_path, keys, monkeypatch):
    """Review finding 8: the Prefect train flow left [signing].key_file out of both stages' settings."""
    import contextlib

    import flows.train as ft
    from flows.runtime import Tally
    monkeypatch.delenv("SAO_SIGNING_KEY", raising=False)
    seen = []

    class State:                                  # what Tally.result reads from a task's returned state
        name = "Completed"

        def result(self):
            return {}

    def fake(settings, return_state=True):        # the stages' tasks: record the settings, write no weights
        seen.append(settings)
        (tmp_path / "out" / "vae").mkdir(parents=True, exist_ok=True)
        (tmp_path / "out" / "vae" / "step-0000001-ema.safetensors").write_bytes(b"")
        return State()
    monkeypatch.setattr(ft, "vae_task", fake)
    monkeypatch.setattr(ft, "dit_task", fake)
    monkeypatch.setattr(ft.runtime, "recorded_run", lambda *a, **k: contextlib.nullcontext(({}, Tally())))
    conf = tmp_path / "sao.toml"
    conf.write_text(f'[paths]\ncatalog = "{tmp_path / "c.duckdb"}"\n[signing]\nkey_file = "{keys["priv"]}"\n')
    ft.train.fn("shards", str(tmp_path / "out"), 1, 1, config_path=str(conf))
    assert [s.get("signing_key_file") for s in seen] == [keys["priv"], keys["priv"]]
    # relative to the config's folder, as `sao train` resolves it
    conf.write_text(f'[paths]\ncatalog = "{tmp_path / "c.duckdb"}"\n[signing]\nkey_file = "k/signing.key"\n')
    seen.clear()
    ft.train.fn("shards", str(tmp_path / "out"), 1, 1, config_path=str(conf))
    assert {s.get("signing_key_file") for s in seen} == {str(tmp_path / "k" / "signing.key")}


def _vae(tmp_path, keys, name="vae", first=11, seed=0):
    """A signed autoencoder checkpoint trained (so its manifest says) on its own recordings."""
    built = _shards_build(tmp_path / f"{name}-shards", "autoencoder", first)
    man = build_manifest(None, str(built), ["autoencoder"], stage="vae", step=1)
    man["training"] = {}
    paths = save_checkpoint(tmp_path / name, 1, {"ema": _weights(seed)}, {}, man, signing_key=keys["key"])
    return pathlib.Path(paths["ema"])


def _dit(tmp_path, keys, vae, out="dit"):
    """A DiT checkpoint whose weights hold VAE's tensors under pretransform.model., as train_dit writes one."""
    from sao.train.checkpoint import autoencoder_part, autoencoder_reference
    weights = {"model.w": torch.ones(3), **{f"pretransform.model.{k}": v for k, v in load_file(str(vae)).items()}}
    man = build_manifest(None, str(tmp_path / "shards" / "b"), ["diffusion"], stage="dit", step=2)
    man["autoencoder"] = autoencoder_reference(vae, autoencoder_part(weights))
    man["training"] = {"vae_checkpoint": str(vae)}
    return pathlib.Path(save_checkpoint(tmp_path / out, 2, {"raw": weights}, {}, man, signing_key=keys["key"])["raw"])


def test_dit_manifest_binds_the_autoencoder_in_its_weights(tmp_path, keys, capsys):
    """Review finding 9: a DiT file holds its autoencoder, but the manifest named it only by a path: no tensor
    digest, no manifest sha256, none of the recordings that trained it."""
    _shards_build(tmp_path / "shards")
    vae = _vae(tmp_path, keys)
    dit = _dit(tmp_path, keys, vae)
    man = json.loads(dit.with_suffix(".manifest.json").read_text())
    vman = json.loads(vae.with_suffix(".manifest.json").read_text())
    ae = man["autoencoder"]
    assert ae["weights"]["sha256"] == vman["weights"]["sha256"] == signing.safetensors_digest(vae)[0]
    assert ae["manifest"] == {"file": str(vae.with_suffix(".manifest.json")),
                              "sha256": _metadata(vae)["sao_manifest_sha256"]}
    assert [r["recording_id"] for r in ae["recordings"]] == ["freesound:11", "freesound:12"] == \
        [r["recording_id"] for r in vman["recordings"]]
    assert ae["checkpoint"] == str(vae) and ae["signing"]["keyid"] == signing.keyid(_pub(keys))
    out = verify(dit, public_key=_pub(keys))
    assert out["autoencoder"]["manifest"].endswith(": matches") and out["autoencoder"]["recordings"] == 2
    assert cli.main(["manifest", "verify", str(dit), "--key", keys["pub"]]) == 0
    assert "autoencoder: tensors " + ae["weights"]["sha256"][:16] in capsys.readouterr().out
    # attribution covers the autoencoder's recordings: a take-down of one names the DiT checkpoint
    from sao.attribution.release import takedown_impact
    from sao.catalog import Catalog
    with Catalog(tmp_path / "c.duckdb") as cat:
        impact = takedown_impact(cat, "freesound:11", checkpoint_roots=[tmp_path / "dit"])
    assert [c["checkpoint"] for c in impact["checkpoints"]] == [str(dit)]
    # the autoencoder's manifest, when present, must be the one recorded
    vm = vae.with_suffix(".manifest.json")
    kept = vm.read_bytes()
    edited = json.loads(kept)
    edited["recordings"] = edited["recordings"][:1]
    vm.write_bytes(manifest_bytes(edited))
    _fails(dit, keys, "the autoencoder's manifest was altered or replaced", capsys)
    vm.write_text("{not json")
    _fails(dit, keys, "the autoencoder's manifest .*not valid JSON", capsys)
    vm.unlink()                                        # moved away: said, not failed
    assert verify(dit, public_key=_pub(keys))["autoencoder"]["manifest"].endswith("not found, not checked")
    vm.write_bytes(kept)


def test_dit_with_a_swapped_or_unnamed_autoencoder_fails(tmp_path, keys, capsys):
    _shards_build(tmp_path / "shards")
    vae, other = _vae(tmp_path, keys), _vae(tmp_path, keys, "vae2", first=21, seed=5)
    dit = _dit(tmp_path, keys, vae)
    mp = dit.with_suffix(".manifest.json")
    original = mp.read_text()

    def tamper(tensors, change):
        """What someone without the key can do: rewrite the tensors, the manifest and the metadata sha256."""
        man = json.loads(original)
        change(man)
        man["weights"]["sha256"] = state_dict_digest(tensors)
        mp.write_bytes(manifest_bytes(man))
        _rewrite(dit, tensors, sao_manifest_sha256=manifest_sha256(man))

    sd = load_file(str(dit))
    swapped = {**{k: v for k, v in sd.items() if not k.startswith("pretransform.")},
               **{f"pretransform.model.{k}": v for k, v in load_file(str(other)).items()}}
    tamper(swapped, lambda m: None)                    # another autoencoder in the file, the manifest left naming ours
    with pytest.raises(ManifestError, match="the autoencoder was swapped or changed"):
        verify(dit)
    _fails(dit, keys, "the autoencoder was swapped or changed", capsys)
    tamper(sd, lambda m: m.pop("autoencoder"))         # the autoencoder left unnamed
    with pytest.raises(ManifestError, match="that the manifest does not name"):
        verify(dit)
    tamper({"model.w": sd["model.w"]}, lambda m: None)  # named, but no longer in the weights
    with pytest.raises(ManifestError, match="no such tensors"):
        verify(dit)
    tamper(sd, lambda m: m["autoencoder"]["manifest"].update(file="vae.manifest.json"))
    with pytest.raises(ManifestError, match="'autoencoder.manifest.file' is the relative path"):
        verify(dit)
    # the writer refuses weights whose autoencoder is not the one named, and an autoencoder it cannot attribute
    from sao.train.checkpoint import autoencoder_part, autoencoder_reference
    man = build_manifest(None, str(tmp_path / "shards" / "b"), ["diffusion"], stage="dit", step=3)
    with pytest.raises(RuntimeError, match="not the autoencoder the manifest names"):
        save_checkpoint(tmp_path / "w", 3, {"raw": sd}, {}, dict(man, training={}))
    with pytest.raises(RuntimeError, match="not the autoencoder the manifest names"):
        save_checkpoint(tmp_path / "w", 3, {"raw": swapped}, {},
                        dict(man, training={}, autoencoder=autoencoder_reference(vae, autoencoder_part(sd))))
    with pytest.raises(ManifestError, match="the DiT holds autoencoder"):
        autoencoder_reference(other, autoencoder_part(sd))
    bare = tmp_path / "bare.safetensors"
    save_file(load_file(str(vae)), str(bare))
    with pytest.raises(ManifestError, match="no manifest beside it"):
        autoencoder_reference(bare, autoencoder_part(sd))
    untrained = autoencoder_reference(None, autoencoder_part(sd))
    assert untrained["checkpoint"] is None and untrained["recordings"] == [] and untrained["manifest"] is None


def test_trained_dit_names_its_autoencoder_and_verifies(shards, tmp_path):  # noqa: F811
    from sao.models.t5_local import build_tiny_t5
    from sao.train.trainer import TrainSettings, train_dit, train_vae
    s = str(shards / "s")
    train_vae(TrainSettings(stage="vae", shards_dir=s, out_dir=str(tmp_path / "vae"), steps=1, checkpoint_every=1,
                            batch_size=2, disc_channels=8, sample_length=8192, catalog=str(shards / "c.duckdb")))
    vae = tmp_path / "vae" / "step-0000001-ema.safetensors"
    t5 = build_tiny_t5(tmp_path / "t5", ["water rain wind dog bird music"] * 100)
    train_dit(TrainSettings(stage="dit", shards_dir=s, out_dir=str(tmp_path / "dit"), steps=1, checkpoint_every=1,
                            batch_size=2, t5_path=str(t5), vae_checkpoint=str(vae)))
    vman = json.loads(vae.with_suffix(".manifest.json").read_text())
    for name in ("raw", "ema"):
        ck = tmp_path / "dit" / f"step-0000001-{name}.safetensors"
        man = json.loads(ck.with_suffix(".manifest.json").read_text())
        assert man["autoencoder"]["weights"]["sha256"] == vman["weights"]["sha256"]
        assert man["autoencoder"]["recordings"] == vman["recordings"] and vman["recordings"]
        assert verify(ck, check_shards=False)["autoencoder"]["manifest"].endswith("matches")
    # pre-encoded latents come from some autoencoder: training on them without naming it is refused
    from sao.train.latents import FORMAT
    from sao.train.manifest import shard_build_info
    lat = tmp_path / "lat"
    (lat / "diffusion").mkdir(parents=True)
    (lat / "diffusion" / "shard-000000.tar").write_bytes(b"")
    (lat / "latents.json").write_text(json.dumps({"format": FORMAT, "status": "complete", "vae_sha256": "0" * 64,
                                                  "source_plan_hash": shard_build_info(s)[0]["plan_hash"],
                                                  "shards": []}))
    with pytest.raises(ValueError, match="needs vae_checkpoint"):
        train_dit(TrainSettings(stage="dit", shards_dir=s, out_dir=str(tmp_path / "dit2"), steps=1, batch_size=2,
                                t5_path=str(t5), latents=str(lat)))
