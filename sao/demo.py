"""`sao demo`: run every stage that exists so far, end to end, on the embedded defaults.

Like a datatrove pipeline, the demo is a list of small steps with one job each; every step
returns its stats and the demo prints them. Later stages (crawl, screens, dedup, shards,
training, attribution) append their step here as they land.
"""
from __future__ import annotations

import logging
import pathlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable


from .config import Config

log = logging.getLogger(__name__)
# the demo's "copyrighted recordings" for the FMA match; demo data, so never a config default
DEMO_COPYRIGHT_CATALOGUE = (pathlib.Path(__file__).resolve().parents[1] / "datasets" / "copyright_catalogue"
                            / "sample.csv")


@dataclass
class DemoContext:
    cfg: Config
    corpus: list[dict[str, Any]] = field(default_factory=list)
    replica: Any = None
    outputs: dict[str, str] = field(default_factory=dict)
    release: str | None = None
    signing_key: Any = None


def step_verify_corpus(ctx: DemoContext) -> dict[str, Any]:
    from .sources import sample_corpus
    t = time.perf_counter()
    rep = sample_corpus.verify(ctx.cfg.path(ctx.cfg.paths.sample_corpus))
    ctx.corpus = sample_corpus.load_metadata(ctx.cfg.path(ctx.cfg.paths.sample_corpus))
    dt_ = time.perf_counter() - t
    out = {"files": rep.checked, "audio_seconds": round(rep.seconds, 1), "megabytes": round(rep.bytes / 1e6, 2),
           "audio_s_per_s": round(rep.seconds / dt_, 1)}
    # one bad file never stops the run: it goes through the pipeline like any crawled item and
    # ends as a decision (the decode stage rejects what does not decode), named here first
    for problem in rep.problems:
        log.warning("sample corpus: %s (the pipeline records a decision for it)", problem)
    if rep.problems:
        out["problems"] = len(rep.problems)
    return out


def step_catalog(ctx: DemoContext) -> dict[str, Any]:
    from .catalog import Catalog
    with Catalog(ctx.cfg.catalog_path) as cat:
        ctx.outputs["catalogue"] = str(ctx.cfg.catalog_path)
        return {"schema_version": cat.schema_version(), **{f"rows.{k}": v for k, v in cat.counts().items()
                                                            if k != "schema_migrations"}}


def step_build_replicas(ctx: DemoContext) -> dict[str, Any]:
    from .sources.replica import build_fma_replica, build_freesound_sounds
    root = ctx.cfg.path(ctx.cfg.replica.data_dir)
    sounds = build_freesound_sounds(ctx.corpus)
    fma_dir = build_fma_replica(ctx.corpus, root / "fma")
    ctx.outputs["fma replica"] = str(fma_dir)
    ctx._sounds = sounds  # type: ignore[attr-defined]
    return {"freesound_sounds": len(sounds), "fma_tracks": sum(e["replica"] == "fma" for e in ctx.corpus)}


def step_serve_replicas(ctx: DemoContext) -> dict[str, Any]:
    from .sources.replica import ReplicaServer, ReplicaSettings
    rc = ctx.cfg.replica
    settings = ReplicaSettings(api_tokens=rc.api_tokens, oauth_tokens=rc.oauth_tokens,
                               rate_limit_per_minute=rc.rate_limit_per_minute, max_page_size=rc.max_page_size,
                               page_site=rc.page_site)
    root = ctx.cfg.path(rc.data_dir)
    ctx.replica = ReplicaServer(ctx._sounds, settings, fma_dir=root / "fma", cache_dir=root / "previews",  # type: ignore[attr-defined]
                                host=rc.host, port=rc.port)
    ctx.replica.start()
    return {"api": ctx.replica.api_url, "fma": f"{ctx.replica.base_url}/fma/"}


def step_crawl_freesound(ctx: DemoContext) -> dict[str, Any]:
    from .refresh import stage_crawl_freesound
    return stage_crawl_freesound(ctx.cfg, base_url=ctx.replica.api_url, token=ctx.cfg.replica.api_tokens[0])


def step_ingest_fma(ctx: DemoContext) -> dict[str, Any]:
    from .refresh import stage_ingest_fma
    return stage_ingest_fma(ctx.cfg, str(ctx.cfg.path(ctx.cfg.replica.data_dir) / "fma"))


def step_license_gate(ctx: DemoContext) -> dict[str, Any]:
    from .licensing.stage import counts_table
    from .refresh import stage_license_gate
    st = stage_license_gate(ctx.cfg)
    return {"decisions written": st.written, "take-downs": st.takedowns,
            "license counts": "\n" + "\n".join("        " + line for line in counts_table(st).splitlines())}


def step_download(ctx: DemoContext) -> dict[str, Any]:
    from .refresh import stage_download
    out = stage_download(ctx.cfg, base_url=ctx.replica.api_url, token=ctx.cfg.replica.api_tokens[0])
    ctx.outputs["audio store"] = str(ctx.cfg.path(ctx.cfg.paths.audio_store))
    return out


def step_decode(ctx: DemoContext) -> dict[str, Any]:
    from .refresh import stage_decode
    return stage_decode(ctx.cfg)


def step_music_screen(ctx: DemoContext) -> dict[str, Any]:
    from .refresh import stage_music_screen
    ckpt = ctx.cfg.music_screen.checkpoint
    out = stage_music_screen(ctx.cfg, uncalibrated=not ckpt)
    if out["uncalibrated"]:
        out = {"WARNING": "UNCALIBRATED screen: random PANNs weights (no checkpoint configured); "
                          "its music verdicts are marked as such and mean nothing", **out}
    return out


def step_review(ctx: DemoContext) -> dict[str, Any]:
    import secrets
    import shutil

    from .refresh import stage_review
    from .review.detection_service import DetectionService
    refs = ctx.cfg.path(ctx.cfg.replica.data_dir) / "detection_references"
    refs.mkdir(parents=True, exist_ok=True)
    # the demo's "copyrighted" reference: the corpus's music that carries no license
    for e in ctx.corpus:
        if e["music"] and e["license"] == "unknown" and e["replica"] == "fma":
            shutil.copyfile(e["path"], refs / pathlib.Path(e["path"]).name)
    demo_catalogue = {}
    if not ctx.cfg.review.copyright_catalogue:    # a configured catalogue wins; else the demo's own sample
        from .catalog import Catalog
        from .review.catalogue_match import load_catalogue
        with Catalog(ctx.cfg.catalog_path) as cat:
            n = load_catalogue(cat, DEMO_COPYRIGHT_CATALOGUE)
        demo_catalogue = {"copyright catalogue": f"{DEMO_COPYRIGHT_CATALOGUE} (demo sample, {n} recordings)"}
    key = secrets.token_urlsafe(24)        # this demo run's own key (the service has no default one)
    with DetectionService(refs, api_key=key) as svc:
        out = stage_review(ctx.cfg, detection_url=svc.url, detection_key=key)
        out["detection service"] = f"{svc.url} ({len(svc.index.names)} reference track(s))"
    return {**demo_catalogue, **out}


def step_dedup(ctx: DemoContext) -> dict[str, Any]:
    from .refresh import stage_dedup, stage_embed
    unc = not ctx.cfg.dedup.clap_checkpoint
    emb = stage_embed(ctx.cfg, uncalibrated=unc)
    out = stage_dedup(ctx.cfg, uncalibrated=unc)
    head = {"WARNING": "UNCALIBRATED CLAP: random weights (no checkpoint configured); near-replica groups "
                       "from these embeddings mean nothing and are marked as such"} if unc else {}
    return {**head, "embedded": emb["embedded"], "already_stored": emb["already_stored"], **out}


def demo_keys_dir(cfg: Config) -> pathlib.Path:
    """The demo's own key pair, inside its data folder: never [signing].key_file or $SAO_SIGNING_KEY."""
    return cfg.path(cfg.paths.data_dir) / "demo-keys"


def step_signing_key(ctx: DemoContext) -> dict[str, Any]:
    from .signing import PRIVATE_NAME, PUBLIC_NAME, generate_keys, keyid, load_private_key, write_public_key
    keys = demo_keys_dir(ctx.cfg)
    made = not (keys / PRIVATE_NAME).exists()
    if made:
        generate_keys(keys)
    ctx.signing_key = load_private_key(keys / PRIVATE_NAME)
    if not (keys / PUBLIC_NAME).exists():          # kept runs of the demo: the public half can be made again
        write_public_key(ctx.signing_key.public_key(), keys / PUBLIC_NAME)
    ctx.outputs["demo public key"] = str(keys / PUBLIC_NAME)
    return {"WARNING": "a demo key, for this demo's data only: sign real releases and checkpoints with your own "
                       "(`sao keys generate`, [signing].key_file)",
            "public key": f"{(keys / PUBLIC_NAME).resolve()} ({'new' if made else 'kept'}, key id "
                          f"{keyid(ctx.signing_key.public_key())[:16]})",
            "verify": f"sao manifest verify CKPT --key {keys / PUBLIC_NAME}; sao release verify NAME --key ..."}


def step_release(ctx: DemoContext) -> dict[str, Any]:
    from .refresh import stage_release
    out = stage_release(ctx.cfg, None, notes="make demo", signing_key=ctx.signing_key)
    ctx.release = out["name"]
    return {"release": f"{out['name']} ({out['status']}, version {out['version']})", "recordings": out["recordings"],
            "content sha256": out["content_sha256"], "excluded": out.get("excluded", "unchanged"),
            "signature": out.get("signature") or "UNSIGNED"}


def step_shards(ctx: DemoContext) -> dict[str, Any]:
    from .refresh import stage_shards
    import pyarrow.parquet as pq

    from .attribution.release import release_items
    from .catalog import Catalog
    out = stage_shards(ctx.cfg, release=ctx.release)
    ctx.outputs["shards"] = out["location"]
    lines = [f"        {k:36s} {v:5d}" for k, v in out["license_mix"].items()]
    # what trains the model is exactly what the attribution names: checked, not assumed
    in_shards = set(pq.read_table(f"{out['location']}/index.parquet", columns=["recording_id"])
                    .column("recording_id").to_pylist())
    with Catalog(ctx.cfg.catalog_path, read_only=True) as cat:
        in_release = set(release_items(cat, ctx.release)) if ctx.release else set()
    warning = {}
    if ctx.release and in_shards != in_release:     # e.g. a file that stopped decoding after the release
        warning = {"WARNING": f"shards and release {ctx.release} differ: only in the shards "
                              f"{sorted(in_shards - in_release)}, only in the release {sorted(in_release - in_shards)}"}
    return {**warning, "recordings": f"{len(in_shards)}, the same recordings as the release: {in_shards == in_release}",
            "shards": f"{out['shards']} ({out['shards_written']} written, {out['shards_skipped']} already there)",
            "size": f"{out['bytes'] / 1e6:.1f} MB", "samples": out["samples"],
            "audio_s_per_s": out["audio_s_per_s"], "license mix (set:license samples)": "\n" + "\n".join(lines)}


def step_generate(ctx: DemoContext) -> dict[str, Any]:
    """The model stack end to end at the tiny config: T5 (random, local), DiT, DPM-Solver++, Oobleck decode."""
    import soundfile as sf
    import torch

    from .models import create_model, parameter_counts
    from .models.sampling import generate
    from .models.t5_local import build_tiny_t5
    root = ctx.cfg.path(ctx.cfg.paths.data_dir) / "models"
    t5 = root / "t5-tiny-uncalibrated"
    if not (t5 / "config.json").exists():
        texts = [f"{e['title']} {e.get('description') or ''} {' '.join(e.get('tags') or [])}" for e in ctx.corpus] * 20
        build_tiny_t5(t5, texts)
    torch.manual_seed(0)
    model = create_model("tiny", t5_path=str(t5))
    t = time.perf_counter()
    audio = generate(model, ["flowing water, stream"], seconds_total=1.0, steps=10, cfg_scale=7.0, seed=0,
                     device="cpu")[0]
    out = root / "demo_generation.wav"
    sf.write(out, audio.clamp(-1, 1).T.numpy(), model.sample_rate, subtype="PCM_16")
    ctx.outputs["generated audio"] = str(out)
    return {"WARNING": "tiny config with random weights (untrained): this checks the pipeline, the audio is noise",
            "parameters": parameter_counts(model), "seconds": round(time.perf_counter() - t, 2),
            "official config": "sao generate PROMPT --ckpt model.safetensors --t5-path T5_DIR"}


def step_attribution(ctx: DemoContext) -> dict[str, Any]:
    from .refresh import stage_attribution
    out = stage_attribution(ctx.cfg, ctx.release)
    ctx.outputs["attribution report"] = out["html"]
    return {"report": out["folder"], "files": out["files"], "seconds": out["seconds"]}


def step_export(ctx: DemoContext) -> dict[str, Any]:
    from .catalog import TABLES, Catalog
    dest = ctx.cfg.path(ctx.cfg.paths.exports)
    with Catalog(ctx.cfg.catalog_path) as cat:
        for t in TABLES:
            cat.export_parquet(t, dest / f"{t}.parquet")
    ctx.outputs["parquet exports"] = str(dest)
    return {"tables": len(TABLES)}


STEPS: list[tuple[str, Callable[[DemoContext], dict[str, Any]]]] = [
    ("verify sample corpus", step_verify_corpus),
    ("open catalogue (migrate)", step_catalog),
    ("build replicas", step_build_replicas),
    ("serve replicas on loopback", step_serve_replicas),
    ("crawl Freesound replica", step_crawl_freesound),
    ("ingest FMA replica", step_ingest_fma),
    ("license gate", step_license_gate),
    ("download audio (HQ previews)", step_download),
    ("decode every stored file (duration, rate, channels from the audio itself)", step_decode),
    ("music screen (PANNs Cnn14_DecisionLevelMax)", step_music_screen),
    ("copyright review (content detection, FMA catalogue match)", step_review),
    ("repeated recordings (LAION-CLAP + faiss)", step_dedup),
    ("demo signing key (ed25519, under the demo's data folder)", step_signing_key),
    ("freeze the release (signed with the demo key)", step_release),
    ("build WebDataset shards (from the release)", step_shards),
    ("generate with the tiny model (DiT + sampler + VAE decode)", step_generate),
    ("export catalogue to Parquet", step_export),
    ("attribution report of the release", step_attribution),
]


def run_demo(cfg: Config, echo: Callable[[str], None] = print) -> DemoContext:
    from .config import secrets
    from .runs import recording
    ctx = DemoContext(cfg)
    t0 = time.perf_counter()
    # the demo's run summary, like a flow run's (once its catalogue exists)
    with recording(cfg.catalog_path, flow="demo", config_hash=cfg.config_hash(), task_runner="inline",
                   secrets=secrets(cfg), only_if_exists=True) as rec:
        try:
            for i, (name, fn) in enumerate(STEPS, 1):
                t = time.perf_counter()
                stats = fn(ctx)
                rec.stages[name] = stats
                echo(f"[{i}/{len(STEPS)}] {name} ({time.perf_counter() - t:.2f}s)")
                for k, v in stats.items():
                    echo(f"      {k}: {v}")
        finally:
            if ctx.replica is not None:
                ctx.replica.stop()
    echo(f"\ndemo finished in {time.perf_counter() - t0:.1f}s (`sao status` lists the runs). Outputs:")
    for k, v in ctx.outputs.items():
        echo(f"  {k:18s} {pathlib.Path(v).resolve()}")
    return ctx

