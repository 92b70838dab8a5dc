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
    detection: Any = None             # the demo's loopback content-detection service
    detection_key: str = ""


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


# what the demo prints of each pipeline stage's details, beside its items/rejected/errors line
DEMO_DETAILS = {
    "crawl_freesound": ("pages", "new", "updated", "malformed", "per_license", "requests", "retries"),
    "ingest_fma": ("tracks", "with_audio", "withheld", "audio_missing", "audio_corrupt", "unchanged"),
    "license_gate": ("written", "takedowns", "table"),
    "download": ("downloaded", "failed", "megabytes"),
    "music_screen": ("music", "not_music", "too_short", "rule", "checkpoint_sha256"),
    "copyright_review": ("catalogue_rows", "content", "catalogue_match"),
    "embed": ("embedded", "already_stored", "signature"),
    "dedup": ("groups", "exact_links", "near_links", "model_name"),
    "release": ("name", "status", "version", "content_sha256", "signature", "uncalibrated_admissions"),
    "shards": ("location", "shards", "shards_written", "shards_skipped", "bytes", "samples", "license_mix"),
    "attribution_report": ("folder", "files"),
}


def step_detection_service(ctx: DemoContext) -> dict[str, Any]:
    """The demo's content-detection service (its references: the corpus's unlicensed music) and its
    copyright catalogue sample, for the pipeline's copyright review."""
    import secrets
    import shutil

    from .review.detection_service import DetectionService
    refs = ctx.cfg.path(ctx.cfg.replica.data_dir) / "detection_references"
    refs.mkdir(parents=True, exist_ok=True)
    for e in ctx.corpus:
        if e["music"] and e["license"] == "unknown" and e["replica"] == "fma":
            shutil.copyfile(e["path"], refs / pathlib.Path(e["path"]).name)
    out = {}
    if not ctx.cfg.review.copyright_catalogue:    # a configured catalogue wins; else the demo's own sample
        from .catalog import Catalog
        from .review.catalogue_match import load_catalogue
        with Catalog(ctx.cfg.catalog_path) as cat:
            n = load_catalogue(cat, DEMO_COPYRIGHT_CATALOGUE)
        out["copyright catalogue"] = f"{DEMO_COPYRIGHT_CATALOGUE} (demo sample, {n} recordings)"
    ctx.detection_key = secrets.token_urlsafe(24)      # this demo run's own key (the service has no default one)
    ctx.detection = DetectionService(refs, api_key=ctx.detection_key).__enter__()
    out["detection service"] = f"{ctx.detection.url} ({len(ctx.detection.index.names)} reference track(s))"
    return out


def pipeline_options(ctx: DemoContext, **kw):
    from .pipeline.stage import RunOptions
    cfg = ctx.cfg
    return RunOptions(base_url=ctx.replica.api_url, fma_dir=str(cfg.path(cfg.replica.data_dir) / "fma"),
                      detection_url=ctx.detection.url,
                      # no checkpoints configured: the screens run with random weights, marked as such
                      uncalibrated=not (cfg.music_screen.checkpoint and cfg.dedup.clap_checkpoint), **kw)


def pipeline_secrets(ctx: DemoContext) -> dict[str, str]:
    return {"freesound_token": ctx.cfg.replica.api_tokens[0], "detection_key": ctx.detection_key}


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


def check_shards_match_release(ctx: DemoContext, shards: dict[str, Any]) -> dict[str, Any]:
    """What trains the model is exactly what the attribution names: checked, not assumed."""
    import pyarrow.parquet as pq

    from .attribution.release import release_items
    from .catalog import Catalog
    in_shards = set(pq.read_table(f"{shards['location']}/index.parquet", columns=["recording_id"])
                    .column("recording_id").to_pylist())
    with Catalog(ctx.cfg.catalog_path, read_only=True) as cat:
        in_release = set(release_items(cat, ctx.release)) if ctx.release else set()
    out = {"recordings": f"{len(in_shards)}, the same recordings as the release: {in_shards == in_release}"}
    if ctx.release and in_shards != in_release:     # e.g. a file that stopped decoding after the release
        out["WARNING"] = (f"shards and release {ctx.release} differ: only in the shards {sorted(in_shards - in_release)}, "
                          f"only in the release {sorted(in_release - in_shards)}")
    return out


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


def step_export(ctx: DemoContext) -> dict[str, Any]:
    from .catalog import TABLES, Catalog
    dest = ctx.cfg.path(ctx.cfg.paths.exports)
    with Catalog(ctx.cfg.catalog_path) as cat:
        for t in TABLES:
            cat.export_parquet(t, dest / f"{t}.parquet")
    ctx.outputs["parquet exports"] = str(dest)
    return {"tables": len(TABLES)}


SETUP: list[tuple[str, Callable[[DemoContext], dict[str, Any]]]] = [
    ("verify sample corpus", step_verify_corpus),
    ("open catalogue (migrate)", step_catalog),
    ("build replicas", step_build_replicas),
    ("serve replicas on loopback", step_serve_replicas),
    ("content-detection service and copyright catalogue (for the review)", step_detection_service),
]
# then the pipeline's refresh stages (sao.pipeline.registry.group("refresh")), the demo's signing key, the
# release stages (REBUILD), and two checks of the model stack and the exports
AFTER_REFRESH = [("demo signing key (ed25519, under the demo's data folder)", step_signing_key)]
FINALLY = [("generate with the tiny model (DiT + sampler + VAE decode)", step_generate),
           ("export catalogue to Parquet", step_export)]


def _stage_lines(stage, st) -> list[tuple[str, Any]]:
    from .pipeline.runner import summary_lines
    lines = summary_lines(st)
    if st.details.get("uncalibrated"):
        lines.insert(0, ("WARNING", "UNCALIBRATED: random weights (no checkpoint configured); these verdicts "
                                    "are marked as such and mean nothing"))
    for k in DEMO_DETAILS.get(stage.name, ()):
        v = st.details.get(k)
        if v not in (None, "", {}, []):
            lines.append((k, "\n" + "\n".join("        " + x for x in v.splitlines()) if isinstance(v, str)
                          and "\n" in v else v))
    return lines


def run_demo(cfg: Config, echo: Callable[[str], None] = print) -> DemoContext:
    from .config import secrets
    from .pipeline import registry
    from .pipeline.runner import run_stages
    from .pipeline.stage import StageContext
    from .runs import recording
    ctx = DemoContext(cfg)
    t0 = time.perf_counter()
    n_steps = len(SETUP) + len(registry.group("refresh")) + len(AFTER_REFRESH) + len(registry.group("rebuild")) + len(FINALLY)
    done = [0]
    t_step = [time.perf_counter()]

    def show(name: str, lines) -> None:
        done[0] += 1
        echo(f"[{done[0]}/{n_steps}] {name} ({time.perf_counter() - t_step[0]:.2f}s)")
        for k, v in lines:
            echo(f"      {k}: {v}")
        t_step[0] = time.perf_counter()

    # the demo's run summary, like a flow run's (once its catalogue exists)
    with recording(cfg.catalog_path, flow="demo", config_hash=cfg.config_hash(), task_runner="inline",
                   secrets=secrets(cfg), only_if_exists=True) as rec:
        def steps(todo) -> None:
            for name, fn in todo:
                stats = fn(ctx)
                rec.stages[name] = stats
                show(name, stats.items())

        def on_stage(stage, st) -> None:
            rec.stages[stage.name] = st.to_dict()
            show(f"pipeline stage {stage.name}", _stage_lines(stage, st))
        try:
            steps(SETUP)
            sctx = StageContext(cfg, pipeline_options(ctx), pipeline_secrets(ctx))
            run_stages(sctx, registry.group("refresh"), on_stage)
            ctx.outputs["audio store"] = str(cfg.path(cfg.paths.audio_store))
            steps(AFTER_REFRESH)
            sctx.options = pipeline_options(ctx, key_file=str(demo_keys_dir(cfg) / "signing.key"),
                                            release_notes="make demo")
            out = run_stages(sctx, registry.group("rebuild"), on_stage)
            ctx.release = out["release"].details["name"]
            ctx.outputs["shards"] = loc = out["shards"].details["location"]
            # each set is a training dataset by itself: the folders (and SAT configs) training points at
            ctx.outputs["diffusion set"] = f"{loc}/diffusion"
            ctx.outputs["autoencoder set"] = f"{loc}/autoencoder"
            ctx.outputs["SAT dataset cfgs"] = f"{loc}/sat"
            ctx.outputs["attribution report"] = out["attribution_report"].details["html"]
            ctx.outputs["dataset card"] = out["attribution_report"].details["dataset_card"]
            ctx.outputs["croissant"] = out["attribution_report"].details["croissant"]
            for k, v in check_shards_match_release(ctx, out["shards"].details).items():
                echo(f"      {k}: {v}")
            steps(FINALLY)
        finally:
            if ctx.detection is not None:
                ctx.detection.__exit__(None, None, None)
            if ctx.replica is not None:
                ctx.replica.stop()
    echo(f"\ndemo finished in {time.perf_counter() - t0:.1f}s (`sao status` lists the runs). Outputs:")
    for k, v in ctx.outputs.items():
        echo(f"  {k:18s} {pathlib.Path(v).resolve()}")
    return ctx
