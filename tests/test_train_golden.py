"""Golden tests: sao's autoencoder objective, discriminator, schedules, EMA and full autoencoder and DiT
training steps against numbers computed once, offline, with stable-audio-tools' (SAT) own code.

How the numbers were obtained: SAT at commit 50049e3 (github Stability-AI/stable-audio-tools, HEAD of
2025), files copied unmodified into a scratch folder outside this repository:
stable_audio_tools/training/losses/{auraloss,losses,utils}.py, models/{discriminators,encodec}.py and
the InverseLR class of training/utils.py; ema_pytorch/ema_pytorch.py of ema-pytorch 0.2.3 (commit abb558d,
the version SAT's setup.py pins). Only imports were stubbed: einops.rearrange (the one pattern
'b c w t -> b c t w', a transpose), torchaudio.transforms.Spectrogram (its code copied from pytorch/audio:
torch.stft, divided by the window's L2 norm when normalized=True) and models/autoencoders.checkpoint
(copied). Run with torch 2.13 (CPU, one thread) on the inputs below, built the same way here.
The configs are stable_audio_2_0_vae.json's training section (SAT configs/model_configs/autoencoders).

- RECON: AutoencoderTrainingWrapper's reconstruction terms for a stereo model, i.e.
  AuralossLoss(SumAndDifferenceSTFTLoss(sample_rate=44100, **spectral.config), "reals", "decoded",
  weight=1.0) ("mrstft_loss") and AuralossLoss(MultiResolutionSTFTLoss(...), reals_left/decoded_left,
  weight=0.5) and the same for right; the gradient of their sum w.r.t. the decoded audio.
- DISC: EncodecDiscriminator(in_channels=2, **discriminator.config, filters=4) (4 filters instead of 64 to
  stay small), its parameters in named_parameters() order set to 0.5 * randn (+1 for weight_g) from
  torch.Generator().manual_seed(1234); .loss(reals, fakes) -> (loss_dis, loss_adv, feature_matching);
  gradients of 0.1 * loss_adv and of 5.0 * feature_matching w.r.t. the fakes, of loss_dis w.r.t. the
  discriminator's parameters (concatenated in parameter order).
- LR: InverseLR(AdamW(**optimizer.config), **scheduler.config) per part; the lr after k scheduler steps.
- EMA_REF: EMA(Linear(3, 2), ema_model=Linear(3, 2), beta=0.9999, power=3/4, update_every=1,
  update_after_step=1) (SAT's arguments), the online weights set to w0 + k * delta before update call k;
  the EMA weights after call k and get_current_decay() then.
Gradients are recorded as their norm and their inner products with 4 fixed random probes.
"""
import pytest
import torch

from sao.train.losses import EncodecDiscriminator, ReconstructionLoss, sat_discriminator_state
from sao.train.schedules import EMA, InverseLR

TOL = 1e-5

# stable_audio_2_0_vae.json's loss and optimizer values (SAT 50049e3), the ones the shipped SAO config carries
SPECTRAL = {"fft_sizes": [2048, 1024, 512, 256, 128, 64, 32], "hop_sizes": [512, 256, 128, 64, 32, 16, 8],
            "win_lengths": [2048, 1024, 512, 256, 128, 64, 32], "perceptual_weighting": True}
DISCRIMINATOR = {"filters": 64, "n_ffts": [2048, 1024, 512, 256, 128], "hop_lengths": [512, 256, 128, 64, 32],
                 "win_lengths": [2048, 1024, 512, 256, 128]}
OPTIMIZERS = {"autoencoder": {"betas": [0.8, 0.99], "lr": 1.5e-4, "weight_decay": 1e-3},
              "discriminator": {"betas": [0.8, 0.99], "lr": 3e-4, "weight_decay": 1e-3}}
SCHEDULER = {"inv_gamma": 200000, "power": 0.5, "warmup": 0.999}


RECON = {'near': {'terms': {'mrstft_loss': 0.29141664505004883,
                    'stft_loss_left': 0.1465861052274704,
                    'stft_loss_right': 0.14598485827445984},
          'grad_norm': 0.1927212029695511,
          'grad_proj': [-0.1437232494354248, 0.04218911752104759, 0.16479894518852234, 0.32398438453674316]},
 'unrelated': {'terms': {'mrstft_loss': 1.4078425168991089,
                         'stft_loss_left': 0.7069336771965027,
                         'stft_loss_right': 0.6996201276779175},
               'grad_norm': 0.23063652217388153,
               'grad_proj': [-0.27576473355293274,
                             -0.1254035234451294,
                             -0.15239699184894562,
                             0.028775133192539215]},
 'mono': {'terms': {'mrstft_loss': 0.14670194685459137,
                    'stft_loss_left': 0.14657987654209137,
                    'stft_loss_right': 0.14657987654209137},
          'grad_norm': 0.2370115965604782,
          'grad_proj': [-0.2287050038576126, -0.03476634621620178, -0.1320606768131256, 0.0896311104297638]}}

DISC = {'loss_dis': 2.003383159637451,
 'loss_adv': 0.18236824870109558,
 'fm': 0.055208563804626465,
 'logit_sums': [-6244.7412109375, -6022.37939453125, 3647.877197265625, -3250.34619140625, 1769.458740234375],
 'logit_shapes': [[2, 1, 5, 1025], [2, 1, 13, 513], [2, 1, 29, 257], [2, 1, 61, 129], [2, 1, 125, 65]],
 'grad_adv': {'norm': 2.5000290406751446e-05,
              'proj': [2.4870119887054898e-05,
                       -3.141599881928414e-05,
                       -2.9920000088168308e-05,
                       -1.902288568089716e-05]},
 'grad_fm': {'norm': 0.007427571807056665,
             'proj': [-0.0020501664839684963,
                      -0.0033781640231609344,
                      -0.013429984450340271,
                      0.0019358363933861256]},
 'disc_param_grad': {'norm': 0.02990369126200676,
                     'proj': [-0.013474811799824238,
                              0.006187564693391323,
                              0.010339775122702122,
                              -0.07791716605424881]}}

LR = {'autoencoder': {'0': 1.5000000000000013e-07,
                 '1': 2.9984925037780704e-07,
                 '2': 4.495479022661078e-07,
                 '10': 1.6417336577408223e-06,
                 '100': 1.441329388184312e-05,
                 '500': 5.906033577613247e-05,
                 '1000': 9.466447450103819e-05},
 'discriminator': {'0': 3.0000000000000025e-07,
                   '1': 5.996985007556141e-07,
                   '2': 8.990958045322156e-07,
                   '10': 3.2834673154816446e-06,
                   '100': 2.882658776368624e-05,
                   '500': 0.00011812067155226494,
                   '1000': 0.00018932894900207639}}

EMA_REF = {'0': {'weight': [-0.1467950940132141,
                  0.7861412763595581,
                  0.9468216300010681,
                  -1.1143440008163452,
                  1.6907901763916016,
                  -0.8948279023170471],
       'bias': [-0.3556250333786011, 1.2323857545852661],
       'decay_next': 0.0},
 '1': {'weight': [-0.008622437715530396,
                  -0.8960572481155396,
                  1.2644999027252197,
                  -0.9815370440483093,
                  1.8281142711639404,
                  -0.6542817950248718],
       'bias': [1.0398257970809937, 2.5794084072113037],
       'decay_next': 0.0},
 '2': {'weight': [0.12955021858215332,
                  -2.5782556533813477,
                  1.5821782350540161,
                  -0.8487300872802734,
                  1.9654383659362793,
                  -0.41373565793037415],
       'bias': [2.435276508331299, 3.926431179046631],
       'decay_next': 0.4053964424986395},
 '3': {'weight': [0.19016537070274353,
                  -3.3162214756011963,
                  1.721540927886963,
                  -0.7904688119888306,
                  2.025681257247925,
                  -0.3082101345062256],
       'bias': [3.0474488735198975, 4.517358303070068],
       'decay_next': 0.5613086623491692},
 '4': {'weight': [0.26643750071525574,
                  -4.244805335998535,
                  1.896901249885559,
                  -0.7171585559844971,
                  2.101485013961792,
                  -0.17542724311351776],
       'bias': [3.8177459239959717, 5.260922908782959],
       'decay_next': 0.6464466094067263},
 '5': {'weight': [0.3494684398174286,
                  -5.255674839019775,
                  2.087800979614258,
                  -0.6373519897460938,
                  2.1840059757232666,
                  -0.03087785094976425],
       'bias': [4.656302452087402, 6.070377826690674],
       'decay_next': 0.7009302437557559},
 '10': {'weight': [0.802511990070343,
                   -10.771305084228516,
                   3.1294116973876953,
                   -0.20190154016017914,
                   2.6342673301696777,
                   0.757830023765564],
        'bias': [9.23173713684082, 10.487025260925293],
        'decay_next': 0.8221720589961077},
 '100': {'weight': [10.29560375213623,
                    -126.34602355957031,
                    24.95536231994629,
                    8.922545433044434,
                    12.069060325622559,
                    17.284448623657227],
         'bias': [105.10560607910156, 103.03364562988281],
         'decay_next': 0.9683772233983162},
 '1000': {'weight': [116.57447052001953,
                     -1420.2501220703125,
                     269.30535888671875,
                     111.07424926757812,
                     117.6952133178711,
                     202.30636596679688],
          'bias': [1178.45068359375, 1139.1290283203125],
          'decay_next': 0.9943765867480965}}


@pytest.fixture(autouse=True)
def one_thread():
    """The numbers were recorded with one thread: with two, SAT's own mono gradient moves by ~1e-5 (bins whose
    power sits at the 1e-8 floor flip with the summation order), and so does this code's, identically."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _probes(shape, n=4, seed=99):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(n)]


def _check_grad(grad, ref):
    """Norm and probe projections equal SAT's, relative to the gradient's size."""
    assert float(grad.norm()) == pytest.approx(ref["norm"], rel=TOL)
    for p, want in zip(_probes(grad.shape), ref["proj"]):
        assert abs(float((grad * p).sum()) - want) <= TOL * ref["norm"] * p.norm(), (float((grad * p).sum()), want)


def _check_delta(delta, ref, seed):
    """A weight change against SAT's: its norm and its projections on seeded random probes."""
    gp = torch.Generator().manual_seed(seed)
    assert float(delta.norm()) == pytest.approx(ref["norm"], rel=TOL)
    for want in ref["proj"]:
        p = torch.randn(delta.numel(), generator=gp)
        assert abs(float(delta @ p) - want) <= TOL * ref["norm"] * float(p.norm())


def _recon_inputs(case):
    """(target, reconstruction) [2, 2, 4096]: near (5% noise), unrelated, or mono material (L = R in both)."""
    g = torch.Generator().manual_seed({"near": 1, "unrelated": 2, "mono": 3}[case])
    t = 0.3 * torch.randn(2, 2, 4096, generator=g)
    if case == "near":
        r = t + 0.05 * torch.randn(2, 2, 4096, generator=g)
    elif case == "unrelated":
        r = 0.3 * torch.randn(2, 2, 4096, generator=g)
    else:
        t = t[:, :1].repeat(1, 2, 1)
        r = (t[:, :1] + 0.05 * torch.randn(2, 1, 4096, generator=g)).repeat(1, 2, 1)
    return t, r


@pytest.fixture(scope="module")
def sao_vae_training():
    """The shipped SAO config's autoencoder training section, checked to be stable_audio_2_0_vae.json's."""
    from sao.models.factory import load_config
    from sao.train.config import VAE_SCHEMA, resolve
    raw = load_config("stable_audio_open_1_0")["model"]["pretransform"]["training"]
    tc = resolve(raw, VAE_SCHEMA, what="autoencoder")
    lc = tc["loss_configs"]
    assert {k: lc["spectral"]["config"][k] for k in SPECTRAL} == SPECTRAL and lc["spectral"]["weights"]["mrstft"] == 1.0
    assert {k: lc["discriminator"]["config"][k] for k in DISCRIMINATOR} == DISCRIMINATOR
    assert lc["discriminator"]["weights"] == {"adversarial": 0.1, "feature_matching": 5.0}
    assert lc["bottleneck"]["weights"]["kl"] == 1e-4 and lc["time"]["weights"]["l1"] == 0.0
    for part, want in OPTIMIZERS.items():
        opt = tc["optimizer_configs"][part]
        assert opt["optimizer"]["type"] == "AdamW"
        assert opt["optimizer"]["config"] == {k: tuple(v) if isinstance(v, list) else v for k, v in want.items()}
        assert opt["scheduler"]["config"] == dict(SCHEDULER, final_lr=0.0)
    assert tc["use_ema"] and tc["warmup_steps"] == 0 and tc["clip_grad_norm"] == 0.0
    # the defaults where the config is silent: SAT's code defaults
    assert lc["spectral"]["config"]["eps"] == 1e-8 and lc["spectral"]["config"]["stereo_weighting"] == "sat"
    assert lc["discriminator"]["config"]["stride"] == [1, 1] and lc["discriminator"]["config"]["normalized"]
    assert tc["ema"] == {"beta": 0.9999, "power": 0.75, "inv_gamma": 1.0, "update_after_step": 1, "update_every": 1,
                         "min_value": 0.0}
    return tc


@pytest.mark.parametrize("case", ["near", "unrelated", "mono"])
def test_reconstruction_loss_and_its_gradient_equal_sats(case, sao_vae_training):
    spectral = sao_vae_training["loss_configs"]["spectral"]
    loss = ReconstructionLoss(weight=spectral["weights"]["mrstft"], sample_rate=44100, **spectral["config"])
    t, r = _recon_inputs(case)
    r.requires_grad_(True)
    terms = loss(r, t)
    assert terms.keys() == RECON[case]["terms"].keys()
    for k, v in terms.items():
        assert float(v.detach()) == pytest.approx(RECON[case]["terms"][k], rel=TOL), k
    sum(terms.values()).backward()
    _check_grad(r.grad, {"norm": RECON[case]["grad_norm"], "proj": RECON[case]["grad_proj"]})


def test_reconstruction_options_are_named_and_change_what_they_say(sao_vae_training):
    cfg = dict(sao_vae_training["loss_configs"]["spectral"]["config"])
    t, r = _recon_inputs("mono")
    sat = ReconstructionLoss(sample_rate=44100, **cfg)(r, t)
    # the paper's text: sum and difference at full weight, left and right at half: twice SAT's mrstft_loss
    paper = ReconstructionLoss(sample_rate=44100, **dict(cfg, stereo_weighting="paper"))(r, t)
    assert float(paper["mrstft_loss"]) == pytest.approx(2 * float(sat["mrstft_loss"]), rel=1e-6)
    assert float(paper["stft_loss_left"]) == pytest.approx(float(sat["stft_loss_left"]), rel=1e-6)
    # bounded spectral convergence is at most SAT's (its denominator adds ||target||)
    bounded = ReconstructionLoss(sample_rate=44100, **dict(cfg, spectral_convergence="bounded"))(r, t)
    assert float(bounded["stft_loss_left"]) < float(sat["stft_loss_left"])
    analytic = ReconstructionLoss(sample_rate=44100, **dict(cfg, a_weighting="analytic"))(r, t)
    assert float(analytic["mrstft_loss"]) != pytest.approx(float(sat["mrstft_loss"]), rel=1e-3)
    with pytest.raises(ValueError, match="stereo_weighting 'ms'"):
        ReconstructionLoss(sample_rate=44100, **dict(cfg, stereo_weighting="ms"))
    # mono models: one multi-resolution loss on the channel, at the full weight
    mono = ReconstructionLoss(sample_rate=44100, channels=1, **cfg)(r[:, :1], t[:, :1])
    assert list(mono) == ["mrstft_loss"]
    assert float(mono["mrstft_loss"]) == pytest.approx(2 * float(sat["stft_loss_left"]), rel=1e-6)


def _golden_discriminator(sao_vae_training):
    cfg = dict(sao_vae_training["loss_configs"]["discriminator"]["config"], filters=4)
    cfg.pop("loss_type")
    disc = EncodecDiscriminator(in_channels=2, **cfg)
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():        # this module's parameter order is SAT's (bias, weight_g, weight_v per conv)
        for n, p in disc.named_parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g) + (1.0 if n.endswith("original0") else 0.0))
    return disc


def test_discriminator_and_its_losses_equal_sats(sao_vae_training):
    disc = _golden_discriminator(sao_vae_training)
    gin = torch.Generator().manual_seed(5)
    reals = 0.3 * torch.randn(2, 2, 4096, generator=gin)
    fakes = (0.5 * reals + 0.3 * torch.randn(2, 2, 4096, generator=gin)).requires_grad_(True)
    (logits_real, feats_real), (logits_fake, feats_fake) = disc(reals), disc(fakes)
    assert [list(x.shape) for x in logits_real] == DISC["logit_shapes"]      # stride (1, 1): full frequency
    assert [float(x.detach().sum()) for x in logits_real] == pytest.approx(DISC["logit_sums"], rel=TOL)
    loss_dis = disc.discriminator_loss(logits_real, logits_fake)
    loss_adv = disc.generator_loss(logits_fake)
    fm = disc.feature_matching(feats_real, feats_fake)
    assert float(loss_dis.detach()) == pytest.approx(DISC["loss_dis"], rel=TOL)
    assert float(loss_adv.detach()) == pytest.approx(DISC["loss_adv"], rel=TOL)
    assert float(fm.detach()) == pytest.approx(DISC["fm"], rel=TOL)
    w = sao_vae_training["loss_configs"]["discriminator"]["weights"]
    (g_adv,) = torch.autograd.grad(w["adversarial"] * loss_adv, fakes, retain_graph=True)
    (g_fm,) = torch.autograd.grad(w["feature_matching"] * fm, fakes, retain_graph=True)
    g_par = torch.cat([x.flatten() for x in torch.autograd.grad(loss_dis, list(disc.parameters()))])
    _check_grad(g_adv, DISC["grad_adv"])
    _check_grad(g_fm, DISC["grad_fm"])
    _check_grad(g_par, DISC["disc_param_grad"])
    # the named alternative: this project's earlier hinge generator loss
    disc.adversarial_loss = "hinge"
    assert float(disc.generator_loss(logits_fake).detach()) != pytest.approx(DISC["loss_adv"], rel=1e-3)


def test_sat_discriminator_state_dicts_load(sao_vae_training):
    """A SAT EncodecDiscriminator state dict (weight_g / weight_v, window buffers) loads under its names."""
    disc = _golden_discriminator(sao_vae_training)
    part = {"bias": "bias", "parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    sat = {}
    for k, v in disc.state_dict().items():
        i, rest = k.split(".", 2)[1:]
        if rest.startswith("convs"):
            j, kind = rest.split(".", 2)[1:]
            layer = f"convs.{j}"
        else:
            layer, kind = rest.split(".", 1)
        sat[f"discriminators.discriminators.{i}.{layer}.conv.{part[kind]}"] = v
    sat["discriminators.discriminators.0.spec_transform.window"] = torch.hann_window(2048)
    fresh = EncodecDiscriminator(in_channels=2, **{k: v for k, v in dict(
        sao_vae_training["loss_configs"]["discriminator"]["config"], filters=4).items() if k != "loss_type"})
    fresh.load_state_dict(sat_discriminator_state(sat))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), disc.state_dict().values()))
    with pytest.raises(KeyError, match="discriminators.x"):
        sat_discriminator_state({"discriminators.x": torch.zeros(1)})


@pytest.mark.parametrize("part", ["autoencoder", "discriminator"])
def test_inverse_lr_equals_sats(part, sao_vae_training):
    from sao.train.config import build_optimizer
    p = torch.nn.Parameter(torch.zeros(1))
    opt, sched = build_optimizer(sao_vae_training["optimizer_configs"][part], [p])
    assert isinstance(sched, InverseLR)
    seen = {}
    for k in range(1001):
        seen[str(k)] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    for k, want in LR[part].items():
        assert seen[k] == pytest.approx(want, rel=1e-9), k
    # a resumed scheduler continues where it was
    again, sched2 = build_optimizer(sao_vae_training["optimizer_configs"][part], [torch.nn.Parameter(torch.zeros(1))])
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_ema_equals_ema_pytorch_0_2_3_with_sats_settings(sao_vae_training):
    torch.manual_seed(0)
    m, e = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    g = torch.Generator().manual_seed(7)
    w0 = [torch.randn(p.shape, generator=g) for p in m.parameters()]
    dl = [torch.randn(p.shape, generator=g) for p in m.parameters()]
    ema = EMA(m, e, **sao_vae_training["ema"])
    for k in range(1001):
        with torch.no_grad():
            for p, a, d in zip(m.parameters(), w0, dl):
                p.copy_(a + k * d)
        ema.update()
        if str(k) in EMA_REF:
            ref = EMA_REF[str(k)]
            assert e.weight.flatten().tolist() == pytest.approx(ref["weight"], rel=TOL, abs=TOL)
            assert e.bias.tolist() == pytest.approx(ref["bias"], rel=TOL, abs=TOL)
            assert ema.decay() == pytest.approx(ref["decay_next"], abs=1e-12)
        if k == 500:          # resuming the EMA's counter gives the same decays
            clone = EMA(m, e, **sao_vae_training["ema"])
            clone.load_state_dict(ema.state_dict())
            assert clone.decay() == ema.decay()


# --- the training section drives training: schema, defaults, overrides -------------------------------------------

def _tiny_vae_raw():
    from sao.models.factory import load_config
    return load_config("tiny")["model"]["pretransform"]["training"]


@pytest.mark.parametrize("path,value,message", [
    ("loss_configs.spectral.config.fft_size", [32], "training.loss_configs.spectral.config.fft_size: unknown key"),
    ("loss_configs.discriminator.config.filters", "64", "training.loss_configs.discriminator.config.filters: \"64\" is not"),
    ("loss_configs.spectral.config.stereo_weighting", "ms", "stereo_weighting: 'ms' is not one of 'sat', 'paper'"),
    ("optimizer_configs.autoencoder.optimizer.config.betaz", [0.9, 0.9], "config.betaz: not an argument of torch.optim.AdamW"),
    ("optimizer_configs.autoencoder.optimizer.type", "Adamm", "'Adamm' is not a torch.optim optimizer"),
    ("force_input_mono", True, "training.force_input_mono: true asks for a mono encoder input"),
    ("loss_configs.spectral.decay", 0.99, "training.loss_configs.spectral.decay: 0.99 asks for a per-call decay"),
    ("latent_masking", 0.5, "training.latent_masking: unknown key"),
])
def test_training_section_errors_name_the_key(path, value, message):
    from sao.train.config import VAE_SCHEMA, TrainingConfigError, resolve
    raw = _tiny_vae_raw()
    *parents, last = path.split(".")
    node = raw
    for p in parents:
        node = node[p]
    node[last] = value
    with pytest.raises(TrainingConfigError, match=message.replace("(", r"\(").replace("'", "'")):
        resolve(raw, VAE_SCHEMA, what="autoencoder")
    # the same path given as an override: the path is checked before the value
    with pytest.raises(TrainingConfigError, match=r"training\.nope: unknown key"):
        resolve(_tiny_vae_raw(), VAE_SCHEMA, {"nope": 1}, what="autoencoder")


def test_sat_options_sao_does_not_implement_pass_only_at_their_off_value():
    from sao.train.config import DIT_SCHEMA, VAE_SCHEMA, TrainingConfigError, resolve
    off = dict(_tiny_vae_raw(), force_input_mono=False, latent_mask_ratio=0.0, teacher_model=None)
    assert resolve(off, VAE_SCHEMA, what="autoencoder") == resolve(_tiny_vae_raw(), VAE_SCHEMA, what="autoencoder")
    dit = {"optimizer_configs": {"diffusion": {"optimizer": {"type": "AdamW", "config": {"lr": 1e-4}}}}}
    assert resolve(dict(dit, mask_padding=False, p_one_shot=0.0, inpainting=None, mask_padding_dropout=None),
                   DIT_SCHEMA, what="diffusion")
    for key, value in (("mask_padding", True), ("p_one_shot", 0.1), ("inpainting", {"mask_kwargs": {}})):
        with pytest.raises(TrainingConfigError, match=f"training.{key}: .* sao does not implement"):
            resolve(dict(dit, **{key: value}), DIT_SCHEMA, what="diffusion")


def test_overrides_change_only_what_they_name_and_sat_configs_load():
    from sao.models.factory import load_config
    from sao.train.config import TrainingConfigError, resolve_dit, resolve_vae
    from sao.train.trainer import TrainSettings
    cfg = load_config("tiny")
    base = resolve_vae(cfg, TrainSettings(stage="vae", shards_dir="x", out_dir="y"))
    s = TrainSettings(stage="vae", shards_dir="x", out_dir="y", lr=1e-3, disc_channels=4,
                      training={"loss_configs.spectral.config.stereo_weighting": "paper",
                                "optimizer_configs.discriminator.scheduler.config.warmup": 0.5})
    got = resolve_vae(cfg, s)
    assert got["optimizer_configs"]["autoencoder"]["optimizer"]["config"]["lr"] == 1e-3
    assert got["optimizer_configs"]["discriminator"]["optimizer"]["config"]["lr"] == 3e-4      # not named: kept
    assert got["optimizer_configs"]["discriminator"]["scheduler"]["config"]["warmup"] == 0.5
    assert got["optimizer_configs"]["autoencoder"]["scheduler"]["config"]["warmup"] == 0.999
    assert got["loss_configs"]["discriminator"]["config"]["filters"] == 4
    assert got["loss_configs"]["spectral"]["config"]["stereo_weighting"] == "paper"
    changed = {k for k in base if base[k] != got[k]}
    assert changed == {"optimizer_configs", "loss_configs"}
    # SAT's own layout (model_type autoencoder, training at the top) is read as well
    pre = cfg["model"]["pretransform"]
    sat_layout = {"model_type": "autoencoder", "sample_rate": 44100, "audio_channels": 2, "model": pre["config"],
                  "training": dict(pre["training"], demo={"demo_every": 2000})}      # demo: accepted, unused
    assert resolve_vae(sat_layout, TrainSettings(stage="vae", shards_dir="x", out_dir="y")) == base
    # the DiT's section: the SAO release's values; a named section that is absent cannot be overridden
    dit = resolve_dit(load_config("stable_audio_open_1_0"), TrainSettings(stage="dit", shards_dir="x", out_dir="y"))
    assert dit["optimizer_configs"]["diffusion"]["optimizer"]["config"] == {"lr": 5e-5, "betas": (0.9, 0.999),
                                                                           "weight_decay": 1e-3}
    assert dit["optimizer_configs"]["diffusion"]["scheduler"]["config"]["inv_gamma"] == 1e6
    assert dit["use_ema"] and dit["clip_grad_norm"] == 0.0 and dit["cfg_dropout_prob"] == 0.1
    no_sched = {"optimizer_configs": {"diffusion": {"optimizer": {"type": "AdamW", "config": {"lr": 1e-4}}}}}
    with pytest.raises(TrainingConfigError, match="scheduler: the config has no such section"):
        resolve_dit({"training": no_sched}, TrainSettings(stage="dit", shards_dir="x", out_dir="y", warmup=0.5))


def test_cli_training_flags_set_only_what_is_given(monkeypatch, tmp_path):
    from sao import cli
    from sao.models.factory import load_config
    from sao.train import trainer
    from sao.train.config import resolve_vae
    seen = []
    monkeypatch.setattr(trainer, "train_vae", lambda s: seen.append(s) or {"step": 0})
    base = ["train", "vae", "--shards", str(tmp_path), "--out", str(tmp_path / "o")]
    assert cli.main(base) == 0
    assert all(getattr(seen[-1], f) is None for f in ("lr", "warmup", "disc_channels", "adv_weight", "training"))
    assert cli.main(base + ["--lr", "2e-4", "--set", "loss_configs.discriminator.weights.adversarial=0",
                            "--set", "loss_configs.spectral.config.a_weighting=analytic"]) == 0
    tc = resolve_vae(load_config("tiny"), seen[-1])
    assert tc["optimizer_configs"]["autoencoder"]["optimizer"]["config"]["lr"] == 2e-4
    assert tc["loss_configs"]["discriminator"]["weights"]["adversarial"] == 0.0
    assert tc["loss_configs"]["spectral"]["config"]["a_weighting"] == "analytic"
    with pytest.raises(SystemExit):
        cli.main(base + ["--set", "no-equals-sign"])


def test_a_resume_state_from_another_set_up_is_an_error_naming_it():
    from sao.train.loop import _restore
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    with pytest.raises(ValueError, match="state.pt: has no 'opt_d'"):
        _restore({"opt": opt.state_dict()}, {"opt": opt, "opt_d": opt}, "state.pt")
    other = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=r"state.pt \[opt\]: does not fit this run's opt"):
        _restore({"opt": other.state_dict()}, {"opt": opt}, "state.pt")


def test_gradients_are_clipped_only_when_configured():
    from sao.train.loop import _optimizer_step
    for max_norm, want in ((0.0, 30.0), (1.0, 1.0)):
        p = torch.nn.Parameter(torch.zeros(2))
        opt = torch.optim.SGD([p], lr=1.0)
        p.grad = torch.tensor([18.0, 24.0])               # norm 30
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        assert _optimizer_step(scaler, opt, None, [p], max_norm) == 1.0
        assert float(p.detach().norm()) == pytest.approx(want)


# One full run of SAT's training_step: the reference (scratch, SAT 50049e3) is AutoencoderTrainingWrapper's
# set-up and training_step transcribed for what stable_audio_2_0_vae.json trains (stereo, "encodec"
# discriminator, warmup_steps 0, no teacher, no latent mask, EMA), with SAT's modules: MultiLoss of
# ValueLoss(loss_adv, 0.1), ValueLoss(feature_matching_distance, 5.0), AuralossLoss(SumAndDifferenceSTFTLoss)
# at 1.0 and AuralossLoss(MultiResolutionSTFTLoss) on left and right at 0.5, ValueLoss(kl, 1e-4); the
# discriminator's ValueLoss(loss_dis); EncodecDiscriminator.loss; AdamW + InverseLR from optimizer_configs;
# ema-pytorch 0.2.3's EMA(beta=0.9999, power=3/4, update_every=1, update_after_step=1), updated before
# opt_gen.step(). The autoencoder is sao's tiny one (torch.manual_seed(0)): SAT's Oobleck code needs packages
# this project does not carry; sao's forward pass was measured equal to SAT's (issue 22), and its layout is
# the released checkpoint's (tests/test_models.py); its posterior drawn by SAT's VAEBottleneck with torch.randn_like returning the
# noise below; the discriminator's weights filled as in DISC. Config changes on both sides: both AdamWs at
# lr 1e-2 and eps 1 (a first Adam step with eps 1e-8 is lr * sign(g), which turns float noise in near-zero
# gradients into +-lr; eps 1 keeps the update smooth in the gradient), InverseLR warmup 0, 8 filters.
# Global steps 0 (autoencoder), 1 (discriminator), 2 (autoencoder) on batches seeded 100 + step. Recorded:
# the logged terms per step and the change of the autoencoder, EMA and discriminator weights (norm and 4
# probe projections; autoencoder keys sorted, probes seeded 11; discriminator in parameter order, seed 12).
STEP = {'log': [{'loss_adv': -0.018696067854762077,
          'feature_matching_loss': 0.40032047033309937,
          'mrstft_loss': 6.650481224060059,
          'stft_loss_left': 4.066379070281982,
          'stft_loss_right': 2.9501686096191406,
          'kl_loss': 0.0016031804261729121,
          'loss': 14.05025577545166},
         {'discriminator_loss': 2.0675647258758545},
         {'loss_adv': -0.018097780644893646,
          'feature_matching_loss': 0.6321617364883423,
          'mrstft_loss': 2.991494655609131,
          'stft_loss_left': 1.527675986289978,
          'stft_loss_right': 1.481292724609375,
          'kl_loss': 0.0016184161650016904,
          'loss': 6.616145610809326}],
 'ae': {'norm': 0.5247987508773804,
        'proj': [0.023297607898712158, 0.43297743797302246, 0.09343282878398895, 0.39784225821495056]},
 'ema': {'norm': 0.344014972448349,
         'proj': [-0.0059066712856292725, 0.2983941435813904, 0.04119746387004852, 0.27706849575042725]},
 'disc': {'norm': 0.007217240519821644,
          'proj': [-0.007436264306306839, -0.0033172103576362133, 0.006555419415235519, 0.008338949643075466]}}


def test_a_full_autoencoder_discriminator_autoencoder_run_equals_sats_training_step():
    from sao.models.factory import create_autoencoder, load_config
    from sao.train.config import resolve_vae
    from sao.train.trainer import TrainSettings, VAETraining
    cfg = load_config("tiny")
    ov = {f"optimizer_configs.{p}.{k}": v for p in ("autoencoder", "discriminator")
          for k, v in (("optimizer.config.lr", 1e-2), ("optimizer.config.eps", 1.0), ("scheduler.config.warmup", 0.0))}
    s = TrainSettings(stage="vae", shards_dir="x", out_dir="y", training=ov)
    tc = resolve_vae(cfg, s)
    ae_cfg = cfg["model"]["pretransform"]["config"]
    torch.manual_seed(0)
    ae = create_autoencoder(ae_cfg, 44100)
    init = {k: v.clone() for k, v in ae.state_dict().items()}
    vt = VAETraining(tc, ae, ae_cfg, 44100, s, torch.device("cpu"))
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for n, p in vt.disc.named_parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g) + (1.0 if n.endswith("original0") else 0.0))
    disc_init = [p.detach().clone() for p in vt.disc.parameters()]
    for step, want in enumerate(STEP["log"]):
        gb = torch.Generator().manual_seed(100 + step)
        x, noise = 0.3 * torch.randn(2, 2, 8192, generator=gb), torch.randn(2, 64, 4, generator=gb)
        got = vt.step(step, iter([(x, noise)]))
        assert {k: v for k, v in got.items() if not k.startswith("lr_")} == pytest.approx(want, rel=TOL), step

    sd, ema = ae.state_dict(), vt.ema_model.state_dict()
    _check_delta(torch.cat([(sd[k] - init[k]).flatten() for k in sorted(sd)]), STEP["ae"], 11)
    _check_delta(torch.cat([(ema[k] - init[k]).flatten() for k in sorted(sd)]), STEP["ema"], 11)
    _check_delta(torch.cat([(p.detach() - q).flatten() for p, q in zip(vt.disc.parameters(), disc_init)]), STEP["disc"], 12)


# One full run of SAT's DiT training_step: the reference (scratch, SAT 50049e3) is DiffusionCondTrainingWrapper's
# set-up, training_step and Lightning's automatic-optimization order (closure: training_step, then
# on_before_zero_grad, where SAT updates the EMA, then zero_grad, backward, optimizer.step; the scheduler per
# step) for the SAO release's training section (v objective, uniform timesteps, pre-encoded latents, no padding
# mask, use_ema), with SAT's modules: models/dit.py, transformer.py, blocks.py (imported unmodified);
# DiTWrapper, ConditionedDiffusionModelWrapper, MultiConditioner, NumberConditioner, NumberEmbedder and its
# TimePositionalEmbedding, MSELoss/MultiLoss, InverseLR and create_{optimizer,scheduler}_from_config (classes
# taken verbatim from their files); ema-pytorch 0.2.3's EMA with SAT's arguments. The model is sao's tiny
# config built by SAT's classes; its parameters filled as _fill_dit does (so no output layer starts at zero).
# What SAT draws itself was given: the Sobol timesteps (t below), randn_like's noise, and torch.bernoulli's
# condition-dropout mask (cfg_dropout_prob 0.1; sample 0 dropped at step 1). The prompt's T5 output is a fixed
# table (T5 is frozen and not trained; SAT's T5Conditioner returns emb * mask, mask). Config changes on both
# sides: AdamW lr 1e-2 and eps 1 (see STEP), InverseLR warmup 0.5 (so each update's lr differs). Recorded:
# the loss and lr per step, the change of the DiT + conditioner weights (sorted keys, probes seeded 21) and
# of the EMA DiT (sorted keys, seed 22) after three steps.
DIT_STEP = {'log': [{'loss': 3.151554822921753, 'lr': 0.005},
                    {'loss': 3.2692365646362305, 'lr': 0.007499996250002814},
                    {'loss': 3.371267080307007, 'lr': 0.008749991250013125}],
            'weights': {'norm': 0.0660710334777832,
                        'proj': [0.01473844051361084, 0.010565055534243584, 0.09564140439033508, 0.004152212291955948]},
            'ema': {'norm': 0.04307625815272331,
                    'proj': [0.04814964905381203, 0.08874384313821793, -0.02238900400698185, 0.01981605961918831]}}


class _FixedPrompt(torch.nn.Module):
    """A frozen text encoder's output per prompt, as SAT's T5Conditioner returns it (emb * mask, mask)."""

    def __init__(self, table):
        super().__init__()
        self.__dict__["table"] = table

    def forward(self, texts, device):
        emb = torch.stack([self.table[t][0] for t in texts])
        mask = torch.stack([self.table[t][1] for t in texts])
        return emb * mask.unsqueeze(-1).float(), mask


def _fill_dit(module):
    g = torch.Generator().manual_seed(77)
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name in sorted(params):
            r = torch.randn(params[name].shape, generator=g)
            if name.endswith("gamma"):
                r = 1 + 0.1 * r
            elif not (name.endswith("embedding.0.weights") or name.endswith("timestep_features.weight")):
                r = 0.1 * r
            params[name].copy_(r)


def _dit_step_inputs():
    g = torch.Generator().manual_seed(2024)
    table = {}
    for i in range(3):
        emb, mask = torch.randn(16, 32, generator=g), torch.zeros(16, dtype=torch.bool)
        mask[:5 + 4 * i] = True
        table[f"prompt {i}"] = (emb, mask)
    steps = []
    for k in range(3):
        gk = torch.Generator().manual_seed(300 + k)
        lat, t, noise = torch.randn(2, 64, 16, generator=gk), torch.rand(2, generator=gk), torch.randn(2, 64, 16, generator=gk)
        drop = torch.tensor([k == 1, False])
        meta = [{"prompt": f"prompt {(k + j) % 3}", "seconds_start": 3.0 * k + j, "seconds_total": 10.0 + 7 * j + k}
                for j in range(2)]
        steps.append((lat, t, noise, drop, meta))
    return table, steps


def test_three_full_dit_steps_equal_sats_training_step():
    from sao.models.factory import create_model, load_config
    from sao.train.config import resolve_dit
    from sao.train.trainer import DiffusionBatch, DiTTraining, TrainSettings
    table, steps = _dit_step_inputs()
    cfg = load_config("tiny")
    ov = {"optimizer_configs.diffusion.optimizer.config.lr": 1e-2, "optimizer_configs.diffusion.optimizer.config.eps": 1.0,
          "optimizer_configs.diffusion.scheduler.config.warmup": 0.5}
    s = TrainSettings(stage="dit", shards_dir="x", out_dir="y", training=ov)
    model = create_model(cfg)
    model.conditioner.conditioners["prompt"] = _FixedPrompt(table)
    trained = torch.nn.ModuleDict({"conditioner": model.conditioner, "model": model.model})
    _fill_dit(trained)
    init = {k: v.clone() for k, v in trained.state_dict().items()}
    dt = DiTTraining(resolve_dit(cfg, s), model, s, torch.device("cpu"))
    for (lat, t, noise, drop, meta), want in zip(steps, DIT_STEP["log"]):
        got = dt.step(iter([DiffusionBatch(lat, meta, t, noise, keep=(~drop).float())]))
        assert got == pytest.approx(want, rel=TOL)

    sd, ema = trained.state_dict(), dt.ema_model.state_dict()
    _check_delta(torch.cat([(sd[k] - init[k]).flatten() for k in sorted(sd)]), DIT_STEP["weights"], 21)
    _check_delta(torch.cat([(ema[k] - init[f"model.{k}"]).flatten() for k in sorted(ema)]), DIT_STEP["ema"], 22)
