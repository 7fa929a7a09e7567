"""Reading backbones out of checkpoints: densessl's own and the reference implementations'.

Every reader returns a :class:`CheckpointContents`: the encoders the file holds, by role
(``query`` = trained by gradient, ``teacher`` = its momentum copy, ``backbone`` = a bare file with
a single network), each as a state dict in the backbone's native names (torchvision ResNet or
timm ViT), the role exported by default, and what is known of the run.

Layouts recognised (methods spec 1.5, 2.5, 4.5, 5.6):

==================  =====================================================  ==================
layout              keys                                                   default export
==================  =====================================================  ==================
densessl            ``{"format": "densessl-checkpoint-v1", "model", ...}``  the method's role
moco                ``state_dict``: ``module.encoder_q.*`` / ``encoder_k``  query
densecl             ``state_dict``: ``backbone.*`` (= ``encoder_q.0``),     query
                    ``encoder_k.0.*`` (OpenSelfSup, no ``module.``)
slotcon             ``model``: ``module.encoder_k.*`` / ``encoder_q``,      teacher
                    ``args`` (a pickled argparse namespace)
mgc                 ``base_encoder.*`` / ``momentum_encoder.*`` (bare or    query
                    under ``state_dict``, with or without ``module.``)
detectron2          pickle ``{"model": {stem.*, res2..5.*: ndarray}}``      backbone
bare                torchvision ResNet or timm ViT names, optionally under  backbone
                    ``state_dict`` / ``model`` and ``module.`` (DenseCL's
                    extracted files, mmcv files, densessl exports)
==================  =====================================================  ==================

Checkpoints are pickles: only open files from a source you trust.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densessl.training.checkpoint import FORMAT, CheckpointError

RESNET_BLOCKS = {
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
}
VIT_WIDTHS = {192: "vit_tiny", 384: "vit_small", 768: "vit_base"}
#: MGC's ViT-S/16 has 8 heads (methods spec 5.1); heads are not visible in the weights
MGC_NUM_HEADS = 8


@dataclass
class CheckpointContents:
    """What a checkpoint file holds, as far as backbones go."""

    path: str
    layout: str
    encoders: dict[str, dict[str, torch.Tensor]]
    default_role: str
    model: dict[str, Any]
    method: str | None = None
    epoch: int | None = None
    step: int | None = None
    config: dict[str, Any] | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def encoder(self, role: str | None = None) -> tuple[str, dict[str, torch.Tensor]]:
        """(role, state dict) of ``role`` or of the default; a clear error for a role not held."""
        role = role or self.default_role
        if role not in self.encoders:
            raise CheckpointError(
                f"{self.path} ({self.layout} layout) holds no '{role}' encoder; "
                f"it holds: {', '.join(self.encoders)}"
            )
        return role, self.encoders[role]


def strip_prefix(state: dict[str, Any], prefix: str, drop: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Keys under ``prefix`` with it removed, minus those whose remainder starts with ``drop``."""
    out = {}
    for key, value in state.items():
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            if not rest.startswith(drop):
                out[rest] = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    return out


def infer_model(state: dict[str, torch.Tensor], num_heads: int | None = None) -> dict[str, Any]:
    """Architecture fields (see :class:`~densessl.config.ModelConfig`) read off a backbone's weights."""
    if "conv1.weight" in state and "layer1.0.conv1.weight" in state:
        block = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
        layers = []
        for stage in range(1, 5):
            indices = {int(m.group(1)) for k in state if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
            layers.append(max(indices) + 1 if indices else 0)
        arch = RESNET_BLOCKS.get((block, tuple(layers)))
        if arch is None:
            raise CheckpointError(
                f"a ResNet with {block} blocks {layers} is not one of {sorted(RESNET_BLOCKS.values())}"
            )
        conv1 = state["conv1.weight"]
        return {
            "arch": arch,
            "small_input": conv1.shape[-1] == 3,
            "width": state["layer1.0.conv1.weight"].shape[0] / 64,
        }
    if "cls_token" in state and "patch_embed.proj.weight" in state:
        width = state["cls_token"].shape[-1]
        if width not in VIT_WIDTHS:
            raise CheckpointError(f"a ViT of width {width} is not one of {sorted(VIT_WIDTHS)}")
        patch = state["patch_embed.proj.weight"].shape[-1]
        grid = round((state["pos_embed"].shape[1] - 1) ** 0.5)
        depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
        arch = VIT_WIDTHS[width]
        return {
            "arch": arch,
            "patch_size": patch,
            "img_size": grid * patch,
            "num_heads": num_heads,
            "depth": depth,
        }
    raise CheckpointError(
        "no ResNet (conv1, layer1..4) or ViT (cls_token, patch_embed, blocks) weights found"
    )


def _tensors(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(v, torch.Tensor | np.ndarray) for v in obj.values())
    )


def _has(state: dict[str, Any], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in state)


def _d2_to_torchvision(name: str) -> str:
    """Invert detectron2's ResNet renaming (methods spec 1.5)."""
    name = re.sub(r"^stem\.conv1\.norm\.", "bn1.", name)
    name = re.sub(r"^stem\.", "", name)
    name = re.sub(r"^res(\d)\.", lambda m: f"layer{int(m.group(1)) - 1}.", name)
    name = re.sub(r"\.shortcut\.norm\.", ".downsample.1.", name)
    name = re.sub(r"\.shortcut\.", ".downsample.0.", name)
    return re.sub(r"\.conv(\d)\.norm\.", r".bn\1.", name)


def _load_any(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())  # noqa: SIM118 (a safetensors handle, not a dict)
            return {"__safetensors__": {k: f.get_tensor(k) for k in names}, "metadata": f.metadata() or {}}
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, RuntimeError) as torch_error:
        try:  # detectron2 .pkl files are plain pickles of numpy arrays
            with open(path, "rb") as f:
                return pickle.load(f, encoding="latin1")
        except Exception:
            raise CheckpointError(f"cannot read {path}: {torch_error}") from torch_error


def read_checkpoint(path: str | Path, num_heads: int | None = None) -> CheckpointContents:
    """Recognise the layout of ``path`` and pull its encoders out (see the module docstring).

    ``num_heads`` sets the attention heads of a ViT found in a file that does not record them.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    obj = _load_any(path)
    where = str(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return _densessl(where, obj)
    if isinstance(obj, dict) and "__safetensors__" in obj:
        info = json.loads(obj["metadata"].get("densessl", "{}"))
        contents = _bare(where, obj["__safetensors__"], "safetensors", info.get("model"), num_heads)
        return _with_ledger(contents, info)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict) and _has(obj["model"], "stem.conv1."):
        state = {_d2_to_torchvision(k): v for k, v in obj["model"].items() if not k.startswith("stem.fc")}
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        return _bare(where, state, "detectron2", None, num_heads)
    if (
        isinstance(obj, dict)
        and isinstance(obj.get("model"), dict)
        and _has(obj["model"], "module.encoder_k.")
    ):
        state = obj["model"]
        encoders = {
            "teacher": strip_prefix(state, "module.encoder_k.", ("fc.",)),
            "query": strip_prefix(state, "module.encoder_q.", ("fc.",)),
        }
        args = obj.get("args")
        notes = {"args": vars(args)} if args is not None and hasattr(args, "__dict__") else {}
        epoch = obj.get("epoch")
        return _contents(
            where, "slotcon", encoders, "teacher", "slotcon", num_heads, epoch=epoch, notes=notes
        )
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint (a {type(obj).__name__}, not a dict of weights)")
    epoch = obj.get("epoch") if isinstance(obj, dict) else None
    if _has(state, "module.encoder_q."):
        encoders = {
            "query": strip_prefix(state, "module.encoder_q.", ("fc.",)),
            "teacher": strip_prefix(state, "module.encoder_k.", ("fc.",)),
        }
        return _contents(where, "moco", encoders, "query", "mocov2", num_heads, epoch=epoch)
    if _has(state, "backbone.") and _has(state, "encoder_k.0."):
        encoders = {"query": strip_prefix(state, "backbone."), "teacher": strip_prefix(state, "encoder_k.0.")}
        return _contents(where, "densecl", encoders, "query", "densecl", num_heads, epoch=epoch)
    mgc = next((p for p in ("base_encoder.", "module.base_encoder.") if _has(state, p)), None)
    if mgc is not None:
        # MoCo v3, which MGC's code derives from, saves the DDP-wrapped model: ``module.`` first
        wrapper = mgc.removesuffix("base_encoder.")
        encoders = {
            "query": strip_prefix(state, mgc, ("head.",)),
            "teacher": strip_prefix(state, f"{wrapper}momentum_encoder.", ("head.",)),
        }
        heads = num_heads or MGC_NUM_HEADS
        return _contents(where, "mgc", encoders, "query", "mgc", heads, epoch=epoch)
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            state = obj[wrapper]
            break
    if _has(state, "module."):
        state = strip_prefix(state, "module.")
    if _has(state, "backbone.") and not _has(state, "conv1.") and not _has(state, "cls_token"):
        state = strip_prefix(state, "backbone.")
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "head."))}
    sidecar = Path(f"{path}.json")
    info = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    return _with_ledger(_bare(where, state, "bare", info.get("model"), num_heads), info)


def _with_ledger(contents: CheckpointContents, info: dict[str, Any]) -> CheckpointContents:
    """An exported file keeps the ledger of the checkpoint it came from (its sidecar's or its
    metadata's), so that exporting it again carries the ledger on."""
    if isinstance(info.get("ledger"), dict):
        contents.notes["ledger"] = info["ledger"]
    return contents


def _bare(
    where: str, state: dict[str, Any], layout: str, recorded: dict[str, Any] | None, num_heads: int | None
) -> CheckpointContents:
    unknown = (
        f"{where}: no recognisable encoder (not a densessl, MoCo, DenseCL, SlotCon, MGC or detectron2 "
        "checkpoint, nor a bare ResNet/ViT state dict)"
    )
    if not _tensors(state):
        raise CheckpointError(unknown)
    state = {
        k: v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v)) for k, v in state.items()
    }
    try:
        model = infer_model(state, num_heads)
    except CheckpointError as exc:
        raise CheckpointError(f"{unknown}: {exc}") from None
    contents = CheckpointContents(where, layout, {"backbone": state}, "backbone", model)
    if recorded:
        contents.model.update({k: v for k, v in recorded.items() if v is not None})
    contents.notes["num_heads_recorded"] = bool(recorded and recorded.get("num_heads"))
    return contents


def _contents(
    where: str,
    layout: str,
    encoders: dict[str, dict[str, torch.Tensor]],
    default_role: str,
    method: str | None,
    num_heads: int | None,
    **extra: Any,
) -> CheckpointContents:
    encoders = {role: state for role, state in encoders.items() if state}
    if default_role not in encoders:
        raise CheckpointError(
            f"{where} looks like a {layout} checkpoint but holds no '{default_role}' encoder"
        )
    try:
        model = infer_model(encoders[default_role], num_heads)
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    contents = CheckpointContents(where, layout, encoders, default_role, model, method=method, **extra)
    # the reference layouts keep no architecture: a ViT's heads are the caller's or a default
    contents.notes["num_heads_recorded"] = False
    return contents


def _densessl(where: str, ckpt: dict[str, Any]) -> CheckpointContents:
    from densessl.config import from_dict, to_dict
    from densessl.methods import METHODS

    config = from_dict(ckpt["config"])
    method = METHODS[config.method.name]
    state = ckpt["model"]
    encoders = {role: strip_prefix(state, f"{path}.") for role, path in method.encoders.items()}
    fields = ("arch", "patch_size", "img_size", "num_heads", "depth")
    if not config.model.arch.startswith("vit"):
        fields = ("arch", "small_input", "width")
    # a depth of None is the architecture's own: leave it out, as for files that predate it
    model = {k: v for k, v in to_dict(config.model).items() if k in fields and v is not None}
    if "num_heads" in fields:
        model.setdefault("num_heads", None)
    return CheckpointContents(
        where,
        "densessl",
        encoders,
        method.exported_role,
        model,
        method=config.method.name,
        epoch=ckpt.get("epoch"),
        step=ckpt.get("step"),
        config=ckpt["config"],
        # checkpoints written before the ledger existed have none
        notes={"num_heads_recorded": True, **({"ledger": ckpt["ledger"]} if ckpt.get("ledger") else {})},
    )
