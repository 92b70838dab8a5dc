"""Image transforms laion-clap imports for its image tower; the audio path never calls them."""
import enum


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


class _ImageOnly:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("image transforms are not available in sao's torchvision compatibility package")


class Normalize(_ImageOnly):
    pass


class Compose(_ImageOnly):
    pass


class RandomResizedCrop(_ImageOnly):
    pass


class ToTensor(_ImageOnly):
    pass


class Resize(_ImageOnly):
    pass


class CenterCrop(_ImageOnly):
    pass
