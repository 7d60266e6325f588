"""LPIPS with the ImageNet backbone loaded from a local file only (nothing is downloaded
unless asked), and the choice between a loaded model and the reason it is unavailable."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from easycache.metrics.common import VideoMetricsError, one_line, resolve_device

# torchvision ImageNet backbones used by LPIPS: file name, official URL, display name.
LPIPS_BACKBONES = {
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "AlexNet"),
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth", "VGG16"),
}
# Smallest frame side the LPIPS trunks accept (pooling layers need >= 1 pixel).
LPIPS_MIN_SIDE = {"alex": 31, "vgg": 16}
# Frames per LPIPS forward pass (bounds activation memory at high resolution).
LPIPS_SUBBATCH = {"alex": 8, "vgg": 2}


class LpipsUnavailable(VideoMetricsError):
    """LPIPS cannot be computed (backbone weights missing/unreadable, package missing)."""


def lpips_weights_path(net: str = "alex") -> Path:
    """Where the torchvision ImageNet backbone for ``net`` is looked up by default.

    ``<torch.hub.get_dir()>/checkpoints/<file>``, i.e. ``$TORCH_HOME/hub/checkpoints``
    with ``TORCH_HOME`` defaulting to ``$XDG_CACHE_HOME/torch`` or ``~/.cache/torch``.
    """
    import torch.hub

    if net not in LPIPS_BACKBONES:
        raise VideoMetricsError(f"unknown LPIPS net {net!r} (choose alex or vgg)")
    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONES[net][0]


def _missing_weights_hint(net: str, where: Path) -> str:
    fname, url, display = LPIPS_BACKBONES[net]
    return (
        f"LPIPS backbone weights not found at {where}; place torchvision's ImageNet {display} "
        f"file {fname} (from {url}) in {where.parent}/ (or set $TORCH_HOME, or pass --lpips_weights PATH)"
    )


_LPIPS_CACHE: Dict[Tuple, Any] = {}


def load_lpips(
    net: str = "alex",
    weights: Optional[Union[str, os.PathLike]] = None,
    device: Optional[Union[str, "torch.device"]] = "cpu",  # noqa: F821
    download: bool = False,
):
    """Build ``lpips.LPIPS(net, spatial=True)`` with the backbone loaded from a local file.

    ``weights``: the torchvision state dict (e.g. ``alexnet-owt-7be5be79.pth``)
    or a folder holding it; default :func:`lpips_weights_path`. Nothing is
    downloaded unless ``download=True``. The linear heads come from the
    ``lpips`` package. Every backbone tensor must be present in the file
    (strict load), so a randomly initialised trunk is never used silently.
    Raises :class:`LpipsUnavailable` with a one-line explanation.
    """
    import torch

    if net not in LPIPS_BACKBONES:
        raise VideoMetricsError(f"unknown LPIPS net {net!r} (choose alex or vgg)")
    fname, url, display = LPIPS_BACKBONES[net]
    if weights is None:
        path = lpips_weights_path(net)
    else:
        path = Path(weights).expanduser()
        if path.is_dir():
            path = path / fname
    dev = resolve_device(device)

    if not path.is_file():
        if weights is not None and not download:
            if Path(weights).expanduser().is_dir():
                raise LpipsUnavailable(_missing_weights_hint(net, path))
            raise LpipsUnavailable(f"--lpips_weights file {path} does not exist (expected torchvision's ImageNet {display} weights {fname} from {url})")
        if not download:
            raise LpipsUnavailable(_missing_weights_hint(net, path))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), hash_prefix=fname.rsplit("-", 1)[1].split(".")[0], progress=True)
        except Exception as exc:
            raise LpipsUnavailable(f"could not download {url} to {path}: {one_line(exc)}; {_missing_weights_hint(net, path)}") from None

    stat = path.stat()
    key = (net, str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(dev))
    if key in _LPIPS_CACHE:
        return _LPIPS_CACHE[key]

    try:
        import lpips as lpips_pkg
    except ImportError:
        raise LpipsUnavailable("the 'lpips' package is not installed (pip install lpips)") from None

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LpipsUnavailable(f"could not read LPIPS backbone weights {path}: {one_line(exc)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise LpipsUnavailable(f"LPIPS backbone weights {path} is not a state dict")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's 'pretrained' deprecation warnings
        # pnet_rand=True: do not let torchvision download the trunk; it is loaded below.
        model = lpips_pkg.LPIPS(net=net, spatial=True, pretrained=True, pnet_rand=True, verbose=False)

    # Linear heads: LPIPS loads them from the package with strict=False; verify they all arrived.
    head_file = Path(lpips_pkg.__file__).resolve().parent / "weights" / f"v{model.version}" / f"{net}.pth"
    try:
        heads = torch.load(str(head_file), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LpipsUnavailable(f"could not read the LPIPS linear heads {head_file}: {one_line(exc)}") from None
    own = model.state_dict()
    lin_keys = {k for k in own if re.match(r"lin\d+\.", k)}
    if set(heads) != lin_keys or any(not torch.equal(own[k], heads[k].to(own[k].dtype)) for k in lin_keys):
        raise LpipsUnavailable(f"the LPIPS linear heads {head_file} do not match the {net} model of this lpips version")

    # Backbone: lpips wraps torchvision's `features` into slices that keep the layer
    # indices as module names ("slice2.3.weight" is "features.3.weight").
    mapped = {}
    missing = []
    for k, v in model.net.state_dict().items():
        _, idx_and_name = k.split(".", 1)
        src = None
        for cand in ("features." + idx_and_name, idx_and_name):
            if cand in state:
                src = cand
                break
        if src is None:
            missing.append("features." + idx_and_name)
            continue
        t = state[src]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(v.shape):
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise LpipsUnavailable(
                f"LPIPS backbone weights {path} do not fit the {display} trunk ({src}: {got} vs {tuple(v.shape)}); "
                f"is it the right file for --lpips_net {net}?"
            )
        mapped[k] = t
    if missing:
        raise LpipsUnavailable(
            f"LPIPS backbone weights {path} lack {len(missing)} of {len(model.net.state_dict())} {display} "
            f"'features' tensors (e.g. {missing[0]}); expected torchvision's {fname}"
        )
    model.net.load_state_dict(mapped, strict=True)
    model = model.eval().to(dev)
    for prm in model.parameters():
        prm.requires_grad_(False)
    model.weights_path = str(path)
    model.lpips_net = net
    _LPIPS_CACHE[key] = model
    return model


def resolve_lpips(lpips, net, weights, device, download, warn: bool = True) -> Tuple[Any, Optional[str]]:
    """-> (model or None, reason it is unavailable or None)."""
    if lpips is False or lpips is None:
        return None, None
    if lpips is True or lpips == "auto":
        try:
            return load_lpips(net, weights, device, download=download), None
        except LpipsUnavailable as exc:
            if lpips is True:
                raise
            if warn:
                warnings.warn(f"LPIPS unavailable: {exc}", RuntimeWarning, stacklevel=3)
            return None, str(exc)
    return lpips, None  # a prebuilt model
