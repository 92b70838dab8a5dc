"""Loopback replicas of the Freesound APIv2 and of the FMA dataset layout, built from the sample
corpus, so the demo and the tests exercise the real client code without the network."""
from .build import build_fma_replica, build_freesound_sounds, freesound_license_name
from .server import ReplicaServer, ReplicaSettings

__all__ = ["ReplicaServer", "ReplicaSettings", "build_fma_replica", "build_freesound_sounds",
           "freesound_license_name"]
