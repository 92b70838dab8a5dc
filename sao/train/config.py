"""The model JSON's ``training`` section, as stable-audio-tools (SAT) reads it, checked against a schema.

Where it is: an autoencoder config (SAT's layout, ``"model_type": "autoencoder"``) has it at the top level;
a diffusion config has the DiT's at the top level and the autoencoder's beside the autoencoder's model, at
``model.pretransform.training`` (the shipped configs carry stable_audio_2_0_vae.json's there).

Every key is SAT's, with SAT's code defaults where a key is absent, except the few this project adds (each
marked "sao:" below). A key the schema does not know is an error naming it; so is a value of the wrong
type or out of its choices. SAT keys that change nothing in these loops (``demo``, ``log_loss_info``) are
accepted and reported as unused. Overrides (CLI flags, ``TrainSettings``) are dotted paths into this
section, checked against the same schema, applied before the check: what is not given keeps the config's
value."""
from __future__ import annotations

import copy
import inspect
import json
import logging
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

REQUIRED = object()


class TrainingConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Leaf:
    kind: str                      # float | int | bool | str | ints | floats | pair
    default: Any = REQUIRED
    choices: tuple = ()
    doc: str = ""

    def check(self, value, path: str):
        ok = {"float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "bool": lambda v: isinstance(v, bool),
              "str": lambda v: isinstance(v, str),
              "ints": lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
              "floats": lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v),
              "pair": lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) for x in v)}[self.kind]
        if value is None and self.default is None:
            return None
        if not ok(value):
            raise TrainingConfigError(f"training.{path}: {json.dumps(value)} is not a{'n' if self.kind[0] in 'ai' else ''} "
                                      f"{self.kind}")
        if self.choices and value not in self.choices:
            raise TrainingConfigError(f"training.{path}: {value!r} is not one of {', '.join(map(repr, self.choices))}")
        return float(value) if self.kind == "float" else list(value) if self.kind in ("ints", "floats", "pair") else value


@dataclass(frozen=True)
class Optional_:
    """A section that may be absent (then None): SAT's optional scheduler, discriminator, time loss."""
    node: dict


@dataclass(frozen=True)
class Ignored:
    """A SAT key that changes nothing in sao's loops: accepted, reported as unused."""
    why: str


@dataclass(frozen=True)
class Unsupported:
    """A SAT option these loops do not implement: accepted at SAT's "off" value; any other value is an
    error naming the key (training would silently differ from what the config asks for)."""
    off: Any
    what: str


@dataclass(frozen=True)
class Kwargs:
    """A torch class's keyword arguments (an optimizer's ``config``): checked against its signature."""
    of: str                         # the sibling "type" key names the class in torch.optim


def _optimizer_node():
    return {"optimizer": {"type": Leaf("str", "AdamW", doc="a torch.optim class (SAT: getattr(torch.optim, type))"),
                          "config": Kwargs("optimizer")},
            "scheduler": Optional_({"type": Leaf("str", "InverseLR", ("InverseLR",)),
                                    "config": {"inv_gamma": Leaf("float", 1.0), "power": Leaf("float", 1.0),
                                               "warmup": Leaf("float", 0.0), "final_lr": Leaf("float", 0.0)}})}


EMA_NODE = {          # sao: SAT hard-codes these EMA(...) arguments (training/autoencoders.py, diffusion.py)
    "beta": Leaf("float", 0.9999), "power": Leaf("float", 0.75), "inv_gamma": Leaf("float", 1.0),
    "update_after_step": Leaf("int", 1), "update_every": Leaf("int", 1), "min_value": Leaf("float", 0.0)}

VAE_SCHEMA = {
    "learning_rate": Leaf("float", None, doc="SAT: the lr of its default optimizers when optimizer_configs is absent"),
    "warmup_steps": Leaf("int", 0, doc="steps before the adversarial and feature-matching terms start"),
    "encoder_freeze_on_warmup": Leaf("bool", False),
    "use_ema": Leaf("bool", False, doc="SAT's factory default is False; stable_audio_2_0_vae.json sets true"),
    "ema": EMA_NODE,
    "clip_grad_norm": Leaf("float", 0.0, doc="SAT's wrapper argument (0: no clipping; its factory never sets it)"),
    "optimizer_configs": {"autoencoder": _optimizer_node(), "discriminator": _optimizer_node()},
    "loss_configs": {
        "discriminator": Optional_({
            "type": Leaf("str", "encodec", ("encodec",)),
            "config": {"filters": Leaf("int"), "n_ffts": Leaf("ints"), "hop_lengths": Leaf("ints"),
                       "win_lengths": Leaf("ints"), "kernel_size": Leaf("pair", [3, 9]), "dilations": Leaf("ints", [1, 2, 4]),
                       "stride": Leaf("pair", [1, 1], doc="SAT's EnCodec copy: (1, 1); EnCodec's paper: (1, 2)"),
                       "normalized": Leaf("bool", True), "filters_scale": Leaf("int", 1), "max_filters": Leaf("int", 1024),
                       "normalize_losses": Leaf("bool", False, doc="feature matching divided by mean|real| + 1e-3"),
                       "loss_type": Leaf("str", "hinge", ("hinge",)),
                       # sao: "hinge" is relu(1 - D(fake)), this project's earlier generator loss
                       "adversarial_loss": Leaf("str", "sat", ("sat", "hinge"))},
            "weights": {"adversarial": Leaf("float", 0.1), "feature_matching": Leaf("float", 5.0)}}),
        "spectral": {
            "type": Leaf("str", "mrstft", ("mrstft",)),
            "config": {"fft_sizes": Leaf("ints"), "hop_sizes": Leaf("ints"), "win_lengths": Leaf("ints"),
                       "window": Leaf("str", "hann_window", ("hann_window", "hamming_window", "blackman_window",
                                                             "bartlett_window")),
                       "w_sc": Leaf("float", 1.0), "w_log_mag": Leaf("float", 1.0), "w_lin_mag": Leaf("float", 0.0),
                       "eps": Leaf("float", 1e-8, doc="floor of |X|^2 (|X| >= 1e-4)"),
                       "perceptual_weighting": Leaf("bool", False),
                       # sao: the paper's text weights M/S fully and L/R at half; SAT's code weights all four at 1/2
                       "stereo_weighting": Leaf("str", "sat", ("sat", "paper")),
                       # sao: "bounded" keeps the term below 1 where both spectra sit at the floor (mono side signal)
                       "spectral_convergence": Leaf("str", "sat", ("sat", "bounded")),
                       # sao: "analytic" weights magnitudes by the IEC curve instead of SAT's 101-tap FIR on the waveform
                       "a_weighting": Leaf("str", "fir", ("fir", "analytic"))},
            "weights": {"mrstft": Leaf("float", 1.0)},
            "decay": Unsupported(1.0, "a per-call decay of the loss weight")},
        "time": Optional_({"type": Leaf("str", "l1", ("l1", "l2")),
                           "weights": {"l1": Leaf("float", 0.0), "l2": Leaf("float", 0.0)},
                           "decay": Unsupported(1.0, "a per-call decay of the loss weight")}),
        # absent: SAT still adds the VAE's KL, at weight 1e-6 (create_loss_modules_from_bottleneck)
        "bottleneck": {"type": Leaf("str", "kl", ("kl",)), "weights": {"kl": Leaf("float", 1e-6)}},
    },
    "demo": Ignored("SAT's demo callback: sao train writes no demo audio"),
    "eval_loss_configs": Ignored("SAT's validation metrics: sao train vae runs no validation loop"),
    "force_input_mono": Unsupported(False, "a mono encoder input (a mono-in, stereo-out autoencoder)"),
    "latent_mask_ratio": Unsupported(0.0, "zeroing a random share of the latents before decoding"),
    "teacher_model": Unsupported(None, "distillation from a teacher autoencoder"),
    "teacher_model_ckpt": Unsupported(None, "distillation from a teacher autoencoder"),
}

DIT_SCHEMA = {
    "learning_rate": Leaf("float", None, doc="SAT: Adam's lr when optimizer_configs is absent"),
    "use_ema": Leaf("bool", True),
    "ema": EMA_NODE,
    "clip_grad_norm": Leaf("float", 0.0, doc="SAT's Trainer gradient_clip_val (defaults.ini: 0.0, no clipping)"),
    "cfg_dropout_prob": Leaf("float", 0.1),
    "timestep_sampler": Leaf("str", "uniform", ("uniform",)),
    "optimizer_configs": {"diffusion": _optimizer_node()},
    "log_loss_info": Ignored("SAT's per-noise-level loss logging"),
    "pre_encoded": Ignored("sao trains on pre-encoded latents when --latents names them"),
    "mask_padding": Unsupported(False, "masking the loss by the padding mask"),
    "mask_padding_dropout": Unsupported(0.0, "dropping the padding mask at random"),
    "timestep_sampler_options": Unsupported({}, "options of the non-uniform timestep samplers"),
    "p_one_shot": Unsupported(0.0, "training a share of the batch at t = 1"),
    "inpainting": Unsupported(None, "inpainting masks"),
    "demo": Ignored("SAT's demo callback: sao train writes no demo audio"),
}

# The TrainSettings fields that set one or more config paths (None: the config's value)
VAE_SETTINGS = {
    "lr": ["optimizer_configs.autoencoder.optimizer.config.lr"],
    "weight_decay": ["optimizer_configs.autoencoder.optimizer.config.weight_decay",
                     "optimizer_configs.discriminator.optimizer.config.weight_decay"],
    "warmup": ["optimizer_configs.autoencoder.scheduler.config.warmup",
               "optimizer_configs.discriminator.scheduler.config.warmup"],
    "ema_decay": ["ema.beta"],
    "kl_weight": ["loss_configs.bottleneck.weights.kl"],
    "adv_weight": ["loss_configs.discriminator.weights.adversarial"],
    "fm_weight": ["loss_configs.discriminator.weights.feature_matching"],
    "disc_channels": ["loss_configs.discriminator.config.filters"],
}
DIT_SETTINGS = {
    "lr": ["optimizer_configs.diffusion.optimizer.config.lr"],
    "weight_decay": ["optimizer_configs.diffusion.optimizer.config.weight_decay"],
    "warmup": ["optimizer_configs.diffusion.scheduler.config.warmup"],
    "ema_decay": ["ema.beta"],
    "cfg_dropout": ["cfg_dropout_prob"],
}


def schema_paths(schema: dict, prefix: str = "") -> list[str]:
    """Every settable dotted path (for --help and error messages)."""
    out = []
    for k, node in schema.items():
        node = node.node if isinstance(node, Optional_) else node
        if isinstance(node, dict):
            out += schema_paths(node, f"{prefix}{k}.")
        elif isinstance(node, Kwargs):
            out.append(f"{prefix}{k}.<{node.of} argument>")
        elif isinstance(node, Leaf):
            out.append(f"{prefix}{k}")
    return out


def _optimizer_class(name: str, path: str):
    cls = getattr(torch.optim, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise TrainingConfigError(f"training.{path}: {name!r} is not a torch.optim optimizer")
    return cls


def _check(schema: dict, raw: Any, path: str, unused: list[str]) -> dict:
    if not isinstance(raw, dict):
        raise TrainingConfigError(f"training.{path.rstrip('.') or '(section)'}: expected an object, got {json.dumps(raw)}")
    for k in raw:
        if k not in schema:
            raise TrainingConfigError(f"training.{path}{k}: unknown key (known here: {', '.join(schema)})")
    out: dict[str, Any] = {}
    for k, node in schema.items():
        p = f"{path}{k}"
        if isinstance(node, Ignored):
            if k in raw:
                unused.append(f"training.{p} ({node.why})")
            continue
        if isinstance(node, Unsupported):
            # null reads as off where SAT's off value is falsy (SAT tests these values for truth)
            if k in raw and raw[k] != node.off and not (raw[k] is None and not node.off):
                shown = json.dumps(raw[k], default=repr)
                raise TrainingConfigError(f"training.{p}: {shown} asks for {node.what}, a stable-audio-tools "
                                          f"option sao does not implement (only {json.dumps(node.off)} is accepted)")
            continue
        if isinstance(node, Optional_):
            out[k] = None if raw.get(k) is None else _check(node.node, raw[k], p + ".", unused)
        elif isinstance(node, dict):
            out[k] = _check(node, raw.get(k, {}), p + ".", unused)
        elif isinstance(node, Kwargs):
            kwargs = raw.get(k, {})
            if not isinstance(kwargs, dict):
                raise TrainingConfigError(f"training.{p}: expected an object")
            cls = _optimizer_class(out.get("type") or raw.get("type", "AdamW"), f"{path}type")
            params = inspect.signature(cls).parameters
            for a in kwargs:
                if a not in params or a == "params":
                    raise TrainingConfigError(f"training.{p}.{a}: not an argument of torch.optim.{cls.__name__}")
            out[k] = {a: (tuple(v) if isinstance(v, list) else v) for a, v in kwargs.items()}
        else:
            if k not in raw:
                if node.default is REQUIRED:
                    raise TrainingConfigError(f"training.{p}: required")
                out[k] = copy.deepcopy(node.default)
            else:
                out[k] = node.check(raw[k], p)
    return out


def _set(raw: dict, schema: dict, path: str, value: Any) -> None:
    """Set PATH (dotted) in the raw section, creating objects the schema has; an unknown path is an error."""
    parts = path.split(".")
    node, cur = schema, raw
    for i, part in enumerate(parts):
        here = ".".join(parts[:i + 1])
        if isinstance(node, Kwargs):
            if i != len(parts) - 1:
                raise TrainingConfigError(f"training.{here}: unknown key")
            cur[part] = value
            return
        node = node.node if isinstance(node, Optional_) else node
        if not isinstance(node, dict) or part not in node or isinstance(node[part], Ignored):
            raise TrainingConfigError(f"training.{here}: unknown key (settable: {', '.join(schema_paths(schema))})")
        if i == len(parts) - 1:
            if isinstance(node[part], (dict, Optional_)) and not isinstance(value, dict):
                raise TrainingConfigError(f"training.{here}: a section, set its keys")
            cur[part] = value
            return
        nxt = node[part]
        if isinstance(nxt, Optional_) and cur.get(part) is None:
            raise TrainingConfigError(f"training.{here}: the config has no such section to change (add it to the config)")
        cur = cur.setdefault(part, {})
        node = nxt


def resolve(raw: dict | None, schema: dict, overrides: dict[str, Any] | None = None, *, what: str) -> dict:
    """The checked training section with SAT's defaults filled in and OVERRIDES ({dotted path: value}) applied."""
    if raw is None:
        raise TrainingConfigError(f"the model config has no {what} training section")
    raw = copy.deepcopy(raw)
    for path, value in (overrides or {}).items():
        _set(raw, schema, path, value)
    unused: list[str] = []
    out = _check(schema, raw, "", unused)
    for u in unused:
        log.info("unused: %s", u)
    return out


def vae_section(cfg: dict) -> tuple[dict, dict | None, int, int]:
    """(autoencoder model config, its raw training section, sample rate, audio channels) of a model config."""
    if cfg.get("model_type") == "autoencoder":
        return cfg["model"], cfg.get("training"), cfg["sample_rate"], cfg.get("audio_channels", 2)
    pre = cfg["model"]["pretransform"]
    return pre["config"], pre.get("training"), cfg["sample_rate"], cfg.get("audio_channels", 2)


def settings_overrides(s, table: dict[str, list[str]]) -> dict[str, Any]:
    """The config paths that TrainSettings S sets: its named fields that are not None, then ``s.training``."""
    out: dict[str, Any] = {}
    for field, paths in table.items():
        v = getattr(s, field)
        if v is not None:
            out.update({p: v for p in paths})
    out.update(s.training or {})
    return out


# SAT's optimizers when a section has no optimizer_configs: AdamW(lr, betas (0.8, 0.99)) for both autoencoder
# parts (AutoencoderTrainingWrapper), Adam(lr) for the DiT (DiffusionCondTrainingWrapper)
_SAT_DEFAULT_OPTIMIZERS = {
    "vae": lambda lr: {part: {"optimizer": {"type": "AdamW", "config": {"lr": lr, "betas": [0.8, 0.99]}}}
                       for part in ("autoencoder", "discriminator")},
    "dit": lambda lr: {"diffusion": {"optimizer": {"type": "Adam", "config": {"lr": lr}}}},
}


def _resolve_stage(raw: dict | None, schema: dict, overrides: dict, stage: str, what: str) -> dict:
    if raw is None:
        raise TrainingConfigError(f"the model config has no {what} training section")
    raw = copy.deepcopy(raw)
    if "optimizer_configs" not in raw:
        if not isinstance(raw.get("learning_rate"), (int, float)):
            raise TrainingConfigError("training: needs optimizer_configs (or SAT's fallback, learning_rate)")
        raw["optimizer_configs"] = _SAT_DEFAULT_OPTIMIZERS[stage](raw["learning_rate"])
    elif raw.get("learning_rate") is not None:
        log.info("unused: training.learning_rate (optimizer_configs sets the learning rates, as in SAT)")
    return resolve(raw, schema, overrides, what=what)


def resolve_vae(cfg: dict, s) -> dict:
    """The autoencoder's checked training section of model config CFG with TrainSettings S's overrides."""
    return _resolve_stage(vae_section(cfg)[1], VAE_SCHEMA, settings_overrides(s, VAE_SETTINGS), "vae", "autoencoder")


def resolve_dit(cfg: dict, s) -> dict:
    """The DiT's checked training section of model config CFG with TrainSettings S's overrides."""
    return _resolve_stage(cfg.get("training"), DIT_SCHEMA, settings_overrides(s, DIT_SETTINGS), "dit", "diffusion")


def build_optimizer(section: dict, params):
    """An optimizer from an ``optimizer_configs.<part>`` section (SAT's create_optimizer_from_config), and its
    InverseLR scheduler, or None where the section has none."""
    from .schedules import InverseLR
    optimizer = getattr(torch.optim, section["optimizer"]["type"])(params, **section["optimizer"]["config"])
    sched = None if section["scheduler"] is None else InverseLR(optimizer, **section["scheduler"]["config"])
    return optimizer, sched
