"""Golden values: the exact prompts and the exact shard plan that fixed inputs give.

The other tests check properties (determinism, distributions) that survive a reordered random
draw, a changed probability or a changed hash input; these pin the values themselves, so such a
change cannot silently alter every shard. If one fails, you changed what every shard contains:
update the value only on purpose, and say so in the commit message.
"""
from sao.prompts import PromptInputs, build_prompt, prompt_rng
from sao.shards.plan import PlanConfig, assign_shards, plan_hash, plan_samples

FS = PromptInputs("freesound", title="Flowing water",
                  description="Loop of a mountain stream, recorded at dawn. https://example.org/x",
                  tags=("water", "stream", "ambience", "field-recording"))
FMA = PromptInputs("fma", title="Pizza Hangover", artist="Dadabots", album="Can't Play Instruments",
                   genres=("Electronic", "Experimental", "Noise"), year="2021")

# (inputs, seed, key, epoch, exact prompt): every case transform, labelled and unlabelled FMA
# prompts, one to all fields, shuffled tag and genre prefixes, a URL dropped from the description.
# Epochs 6, 8, 10, 37 and 42 draw close to a threshold: moving the FMA labelled share (0.5) by 0.05
# either way, or any one of the four case weights (0.25 each) by 0.05, changes at least one case.
PROMPTS = [
    (FS, 7, "freesound:100001-ae-0000", 0, "flowing water"),
    (FS, 7, "freesound:100001-ae-0000", 1, "AMBIENCE, WATER"),
    (FS, 7, "freesound:100001-ae-0000", 2, "loop of a mountain stream, recorded at dawn., flowing water"),
    (FS, 7, "freesound:100001-ae-0000", 3, "water, Loop of a mountain stream, recorded at dawn."),
    (FS, 7, "freesound:100001-ae-0000", 4,
     "FLOWING WATER, LOOP OF A MOUNTAIN STREAM, RECORDED AT DAWN., FIELD-RECORDING, AMBIENCE"),
    (FS, 7, "freesound:100001-ae-0000", 5,
     "flowing water, stream, field-recording, ambience, water, loop of a mountain stream, recorded at dawn."),
    (FS, 7, "freesound:100001-ae-0000", 6, "ambience, stream, field-recording"),
    (FS, 7, "freesound:100001-ae-0000", 42,
     "Flowing Water, Field-recording, Loop Of A Mountain Stream, Recorded At Dawn."),
    (FS, 0, "k", 0,
     "Water, Ambience, Stream, Field-recording, Flowing Water, Loop Of A Mountain Stream, Recorded At Dawn."),
    (FMA, 7, "fma:2-dit-0001", 0,
     "title: Pizza Hangover, genres: Experimental, album: Can't Play Instruments, artist: Dadabots, year: 2021"),
    (FMA, 7, "fma:2-dit-0001", 1, "Can't Play Instruments, 2021"),
    (FMA, 7, "fma:2-dit-0001", 2, "title: Pizza Hangover, year: 2021, genres: Electronic, Noise, Experimental, "
                                  "artist: Dadabots, album: Can't Play Instruments"),
    (FMA, 7, "fma:2-dit-0001", 3, "Year: 2021"),
    (FMA, 7, "fma:2-dit-0001", 4, "Album: Can't Play Instruments, Year: 2021"),
    (FMA, 7, "fma:2-dit-0001", 5, "2021"),
    (FMA, 7, "fma:2-dit-0001", 8, "DADABOTS, ELECTRONIC, EXPERIMENTAL, 2021, PIZZA HANGOVER"),
    (FMA, 7, "fma:2-dit-0001", 10,
     "dadabots, experimental, noise, electronic, 2021, pizza hangover, can't play instruments"),
    (FMA, 7, "fma:2-dit-0001", 37, "artist: dadabots, year: 2021"),
    (FMA, 0, "k", 0, "DADABOTS, CAN'T PLAY INSTRUMENTS, ELECTRONIC, NOISE, EXPERIMENTAL, PIZZA HANGOVER, 2021"),
]


def test_prompt_rng_golden_value():
    """The RNG seeding (sha256 of seed, key, epoch): if this fails, you changed what every shard
    contains (every prompt and chunk offset); update the value only on purpose and say so in the commit."""
    assert prompt_rng(7, "k", 0).random() == 0.20489671952895627


def test_prompt_golden_values():
    """Exact prompts for fixed inputs, seeds, keys and epochs: if this fails, you changed what every
    shard contains; update the values only on purpose and say so in the commit."""
    got = [(inp.kind, seed, key, epoch, build_prompt(inp, seed=seed, key=key, epoch=epoch))
           for inp, seed, key, epoch, _ in PROMPTS]
    assert got == [(inp.kind, seed, key, epoch, want) for inp, seed, key, epoch, want in PROMPTS]


def _rec(rid, source, duration, sample_rate, channels, license_canonical, **kw):
    """One row as ``eligible_recordings`` returns it."""
    sid = rid.split(":")[1]
    r = {"recording_id": rid, "source": source, "source_id": sid, "title": "", "author": "", "description": "",
         "tags": [], "duration": duration, "sample_rate": sample_rate, "channels": channels,
         "license_canonical": license_canonical, "license_url": "", "page_url": f"https://example.org/{sid}/",
         "audio_path": f"{source}/{sid}.flac", "content_sha256": f"{sid:0>64}", "extra": {},
         "admitted_by": {"license_gate": 1, "decode": 2}, "path": f"/audio/{source}/{sid}.flac"}
    r.update(kw)
    return r


# a stereo 48 kHz Freesound recording (2 regular + 3 hi-fi chunks), a short mono one, a 61.5 s FMA track
RECS = [
    _rec("freesound:100001", "freesound", 12.0, 48000, 2, "cc0-1.0", title="Flowing water", author="alice",
         description="Loop of a mountain stream. https://example.org/x", tags=["water", "stream", "ambience"]),
    _rec("freesound:100002", "freesound", 3.0, 44100, 1, "cc-by-4.0", title="Door slam", author="bob",
         description="A heavy wooden door.", tags=["door", "slam"],
         license_url="https://creativecommons.org/licenses/by/4.0/"),
    _rec("fma:2", "fma", 61.5, 44100, 2, "cc-by-4.0", title="Pizza Hangover", author="Dadabots",
         extra={"album": "Can't Play Instruments", "genres": ["Electronic", "Noise"], "year": 2021}),
]
CFG = PlanConfig(seed=3, target_shard_bytes=8 * 1024 * 1024)
PLAN_HASH = "9599d011b8499c861a00d9661ae9837b004f39dccca6ab1330460917100d8042"

# (key, set, offset, length, hifi_extra, needs_hf_check, prompt), in plan order
SAMPLES = [
    ("fma-2-ae-0000", "autoencoder", 1814977, 220500, True, False,
     "2021, DADABOTS, CAN'T PLAY INSTRUMENTS, PIZZA HANGOVER, ELECTRONIC, NOISE"),
    ("fma-2-ae-0001", "autoencoder", 1487901, 220500, True, False,
     "PIZZA HANGOVER, CAN'T PLAY INSTRUMENTS, ELECTRONIC"),
    ("fma-2-ae-0002", "autoencoder", 459609, 220500, True, False, "ARTIST: DADABOTS"),
    ("fma-2-dit-0000", "diffusion", 0, 2097152, False, False,
     "electronic, 2021, dadabots, pizza hangover, can't play instruments"),
    ("fma-2-dit-0001", "diffusion", 2097152, 2097152, False, False, "2021, DADABOTS, NOISE, PIZZA HANGOVER"),
    ("freesound-100001-ae-0000", "autoencoder", 91553, 220500, False, False,
     "flowing water, loop of a mountain stream."),
    ("freesound-100001-ae-0001", "autoencoder", 196401, 220500, False, False, "Loop of a mountain stream."),
    ("freesound-100001-ae-0002", "autoencoder", 265767, 220500, True, True,
     "loop of a mountain stream., flowing water"),
    ("freesound-100001-ae-0003", "autoencoder", 274949, 220500, True, True,
     "Flowing water, Loop of a mountain stream."),
    ("freesound-100001-ae-0004", "autoencoder", 23354, 220500, True, True, "stream, ambience, water"),
    ("freesound-100001-dit-0000", "diffusion", 0, 2097152, False, False, "loop of a mountain stream., flowing water"),
    ("freesound-100002-ae-0000", "autoencoder", 0, 220500, False, False, "a heavy wooden door., door slam"),
    ("freesound-100002-dit-0000", "diffusion", 0, 2097152, False, False, "A Heavy Wooden Door., Door Slam"),
]


def test_shard_plan_hash_golden_value():
    """The plan hash (and so the default build name snap-<hash[:12]>) of a fixed plan: if this
    fails, you changed what every shard contains; update the value only on purpose and say so in the commit."""
    samples = plan_samples(RECS, CFG)
    assert plan_hash(samples, CFG) == PLAN_HASH
    assert f"snap-{plan_hash(samples, CFG)[:12]}" == "snap-9599d011b849"
    assert plan_hash(plan_samples(list(reversed(RECS)), CFG), CFG) == PLAN_HASH
    # the settings are hashed too: the same samples under the default shard size are another plan
    assert plan_hash(samples, PlanConfig(seed=3)) == "54abe47f7bc6a5a7f37f9d6a20b9b06ba1344b6680f0e51c5660a3950b96c052"


def test_shard_plan_samples_golden_values():
    """Exact keys, offsets, lengths, hi-fi flags and prompts of every planned sample, and their
    shards: if this fails, you changed what every shard contains; update the values only on purpose
    and say so in the commit."""
    samples = plan_samples(RECS, CFG)
    assert [(s.key, s.set, s.offset, s.length, s.hifi_extra, s.needs_hf_check, s.meta["prompt"])
            for s in samples] == SAMPLES
    assert samples[0].meta["prompt_inputs"] == {
        "kind": "fma", "title": "Pizza Hangover", "description": "", "tags": [], "year": "2021",
        "genres": ["Electronic", "Noise"], "album": "Can't Play Instruments", "artist": "Dadabots"}
    assert [(spec.name, [s.key for s in spec.samples]) for spec in assign_shards(samples, CFG)] == [
        ("autoencoder/shard-000000.tar", [s[0] for s in SAMPLES if s[1] == "autoencoder"]),
        ("diffusion/shard-000000.tar", ["fma-2-dit-0000"]),
        ("diffusion/shard-000001.tar", ["fma-2-dit-0001"]),
        ("diffusion/shard-000002.tar", ["freesound-100001-dit-0000"]),
        ("diffusion/shard-000003.tar", ["freesound-100002-dit-0000"]),
    ]
