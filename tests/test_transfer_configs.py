"""The fine-tuning configs in configs/transfer/ match their protocols, the exporter and the README.

detectron2, mmcv, mmseg, mmdet and mmpose are not installed here (and are no dependencies of
densessl): YAML configs are read with ``yaml.safe_load`` (resolving ``_BASE_`` like detectron2),
and the OpenMMLab Python configs are evaluated by a small, closed AST interpreter that accepts only
module-level ``name = value`` statements built from literals, ``dict(...)``, lists, tuples, dict
displays, unary minus, simple arithmetic, subscripts and names assigned earlier in the same file.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TRANSFER = ROOT / "configs" / "transfer"
README = TRANSFER / "README.md"

TORCHVISION_MEAN = [123.675, 116.28, 103.53]
TORCHVISION_STD = [58.395, 57.12, 57.375]
D2_WEIGHTS = "pretrained/densessl_r50.pkl"
MM_RESNET_WEIGHTS = "pretrained/densessl_r50_mm.pth"
VIT_WEIGHTS = "pretrained/densessl_vits16.pth"

D2_BASE = "detectron2/Base-RCNN-C4-BN.yaml"
D2_CONFIGS = ["detectron2/voc_R_50_C4_24k.yaml", "detectron2/coco_R_50_FPN_1x.yaml"]
MM_RESNET_CONFIGS = [
    "mmseg/fcn_d6_r50-d16_513x513_30k_voc12aug.py",
    "mmseg/fcn_d6_r50-d16_769x769_90k_cityscapes.py",
    "mmseg/fcn_r50-d8_512x512_80k_ade20k.py",
]
VIT_CONFIGS = [
    "mmseg/semfpn_vits16_512x512_40k_ade20k.py",
    "mmdet/mask_rcnn_vits16_fpn_1x_coco.py",
    "mmpose/vitpose_small_256x192_coco.py",
]
# every file below configs/transfer/ that a test checks; a new config must be added here
COVERED = {D2_BASE, *D2_CONFIGS, *MM_RESNET_CONFIGS, *VIT_CONFIGS}
# the configs a README row must describe (the base file is not run on its own)
RUNNABLE = [*D2_CONFIGS, *MM_RESNET_CONFIGS, *VIT_CONFIGS]


# --------------------------------------------------------------------------- readers


class UnsupportedConfig(ValueError):
    """A Python config uses a construct the closed evaluator does not accept."""


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
}


def _evaluate(node: ast.expr, names: dict[str, Any], where: str) -> Any:
    """Value of one expression of a config file; anything outside the accepted subset raises."""
    line = f"{where}:{getattr(node, 'lineno', '?')}"
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise UnsupportedConfig(f"{line}: name {node.id!r} is not assigned earlier in the file")
        return names[node.id]
    if isinstance(node, ast.List):
        return [_evaluate(item, names, where) for item in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_evaluate(item, names, where) for item in node.elts)
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise UnsupportedConfig(f"{line}: '**' inside a dict display is not accepted")
        return {
            _evaluate(key, names, where): _evaluate(value, names, where)
            for key, value in zip(node.keys, node.values, strict=True)
            if key is not None
        }
    if isinstance(node, ast.Call):
        if not (isinstance(node.func, ast.Name) and node.func.id == "dict") or node.args:
            raise UnsupportedConfig(f"{line}: only dict(key=value, ...) calls are accepted")
        result: dict[str, Any] = {}
        for keyword in node.keywords:
            value = _evaluate(keyword.value, names, where)
            if keyword.arg is None:  # dict(..., **other_dict)
                if not isinstance(value, dict):
                    raise UnsupportedConfig(f"{line}: '**' needs a dict")
                result.update(value)
            else:
                result[keyword.arg] = value
        return result
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand, names, where)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UnsupportedConfig(f"{line}: unary sign on a non-number")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left, names, where), _evaluate(node.right, names, where)
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.Subscript):
        container = _evaluate(node.value, names, where)
        if not isinstance(container, dict | list | tuple):
            raise UnsupportedConfig(f"{line}: subscript of a {type(container).__name__}")
        return container[_evaluate(node.slice, names, where)]
    raise UnsupportedConfig(f"{line}: {type(node).__name__} is not accepted in a config")


def evaluate_config_source(source: str, where: str = "<config>") -> dict[str, Any]:
    """The module-level variables of an OpenMMLab-style Python config, without executing it."""
    names: dict[str, Any] = {}
    for statement in ast.parse(source, filename=where).body:
        if (
            isinstance(statement, ast.Expr)
            and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str)
        ):
            continue  # docstring
        if not (
            isinstance(statement, ast.Assign)
            and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name)
        ):
            raise UnsupportedConfig(
                f"{where}:{statement.lineno}: only `name = value` statements are accepted, "
                f"not {type(statement).__name__}"
            )
        names[statement.targets[0].id] = _evaluate(statement.value, names, where)
    return names


def load_mm(relative: str) -> dict[str, Any]:
    path = TRANSFER / relative
    return evaluate_config_source(path.read_text(), str(path.relative_to(ROOT)))


def _merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_d2(relative: str) -> dict[str, Any]:
    """A detectron2 YAML config with its ``_BASE_`` chain merged in (paths relative to the file)."""
    path = TRANSFER / relative
    data = yaml.safe_load(path.read_text()) or {}
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    base_path = (path.parent / base).resolve()
    assert base_path.is_file(), f"{relative}: _BASE_ {base} does not exist"
    assert TRANSFER in base_path.parents, f"{relative}: _BASE_ {base} is outside configs/transfer"
    return _merge(load_d2(str(base_path.relative_to(TRANSFER))), data)


def find_typed(tree: Any, type_name: str) -> Iterator[dict[str, Any]]:
    """Every dict with ``type == type_name`` anywhere in a nested config value."""
    if isinstance(tree, dict):
        if tree.get("type") == type_name:
            yield tree
        for value in tree.values():
            yield from find_typed(value, type_name)
    elif isinstance(tree, list | tuple):
        for value in tree:
            yield from find_typed(value, type_name)


def vit_checkpoint(config: dict[str, Any]) -> str:
    return config["model"]["backbone"]["pretrained"]


# --------------------------------------------------------------------------- evaluator itself


def test_evaluator_accepts_the_config_subset():
    source = (
        '"""doc"""\n'
        "base = dict(type='A', size=(2, 3), lr=-1e-3)\n"
        "scaled = base['size'][0] * 4 + 1\n"
        "root = 'data/' + 'coco/'\n"
        "item = dict(base, **base) if False else dict(extra=[1, -2], **base)\n"
        "keys = {'pos_embed': dict(decay_mult=0.0)}\n"
    )
    with pytest.raises(UnsupportedConfig, match="IfExp"):
        evaluate_config_source(source)
    names = evaluate_config_source(source.replace("dict(base, **base) if False else ", ""))
    assert names["base"] == {"type": "A", "size": (2, 3), "lr": -1e-3}
    assert names["scaled"] == 9 and names["root"] == "data/coco/"
    assert names["item"] == {"extra": [1, -2], "type": "A", "size": (2, 3), "lr": -1e-3}
    assert names["keys"] == {"pos_embed": {"decay_mult": 0.0}}


@pytest.mark.parametrize(
    "source",
    [
        "import os\n",
        "x = open('f')\n",
        "x = __import__('os')\n",
        "x = dict(a=1).keys()\n",
        "x = y\n",
        "x = lambda: 1\n",
        "x = [i for i in (1, 2)]\n",
        "x, y = 1, 2\n",
        "x = dict(1)\n",
        "x = -'a'\n",
        "x = 2 ** 3\n",
        "def f():\n    pass\n",
        "if True:\n    x = 1\n",
    ],
)
def test_evaluator_rejects_everything_else(source):
    with pytest.raises(UnsupportedConfig):
        evaluate_config_source(source)


# --------------------------------------------------------------------------- coverage


def test_every_transfer_config_is_covered():
    on_disk = {
        str(path.relative_to(TRANSFER))
        for path in TRANSFER.rglob("*")
        if path.is_file() and path.suffix in {".yaml", ".yml", ".py"}
    }
    assert on_disk == COVERED, "configs/transfer/ and this test's lists disagree"


@pytest.mark.parametrize("relative", sorted(p for p in COVERED if p.endswith(".py")))
def test_every_python_config_parses(relative):
    config = load_mm(relative)
    assert "_base_" not in config, f"{relative} must be self-contained"
    assert config["model"]["backbone"]["type"] in {"ResNet", "TimmStyleViT"}


# --------------------------------------------------------------------------- detectron2


@pytest.mark.parametrize("relative", D2_CONFIGS)
def test_detectron2_configs_fit_the_exported_weights(relative):
    cfg = load_d2(relative)
    model = cfg["MODEL"]
    assert model["WEIGHTS"] == D2_WEIGHTS and model["WEIGHTS"].endswith(".pkl")
    assert model["PIXEL_MEAN"] == TORCHVISION_MEAN
    assert model["PIXEL_STD"] == TORCHVISION_STD
    assert cfg["INPUT"]["FORMAT"] == "RGB"
    assert model["RESNETS"]["STRIDE_IN_1X1"] is False
    assert model["RESNETS"]["DEPTH"] == 50
    assert model["RESNETS"]["NORM"] == "SyncBN"
    assert model["BACKBONE"]["FREEZE_AT"] == 0
    assert cfg["TEST"]["PRECISE_BN"]["ENABLED"] is True
    assert (cfg["SOLVER"]["IMS_PER_BATCH"], cfg["SOLVER"]["BASE_LR"]) == (16, 0.02)
    assert cfg["INPUT"]["MIN_SIZE_TEST"] == 800


def test_detectron2_voc_c4_protocol():
    raw = yaml.safe_load((TRANSFER / "detectron2/voc_R_50_C4_24k.yaml").read_text())
    assert raw["_BASE_"] == Path(D2_BASE).name
    cfg = load_d2("detectron2/voc_R_50_C4_24k.yaml")
    model, solver = cfg["MODEL"], cfg["SOLVER"]
    assert model["META_ARCHITECTURE"] == "GeneralizedRCNN" and model["MASK_ON"] is False
    assert model["ROI_HEADS"]["NAME"] == "Res5ROIHeadsExtraNorm"
    assert model["ROI_HEADS"]["NUM_CLASSES"] == 20
    assert model["RESNETS"]["OUT_FEATURES"] == ["res4"]
    assert (model["RPN"]["PRE_NMS_TOPK_TEST"], model["RPN"]["POST_NMS_TOPK_TEST"]) == (6000, 1000)
    assert (solver["MAX_ITER"], solver["STEPS"], solver["WARMUP_ITERS"]) == (24000, [18000, 22000], 100)
    assert cfg["INPUT"]["MIN_SIZE_TRAIN"] == list(range(480, 801, 32))
    assert cfg["DATASETS"] == {"TRAIN": ["voc_2007_trainval", "voc_2012_trainval"], "TEST": ["voc_2007_test"]}
    # the custom head is documented where it is used
    assert "must register it" in (TRANSFER / D2_BASE).read_text()


def test_detectron2_coco_mask_rcnn_protocol():
    cfg = load_d2("detectron2/coco_R_50_FPN_1x.yaml")
    model, solver = cfg["MODEL"], cfg["SOLVER"]
    assert model["MASK_ON"] is True and model["BACKBONE"]["NAME"] == "build_resnet_fpn_backbone"
    assert model["FPN"]["NORM"] == "SyncBN"
    box = model["ROI_BOX_HEAD"]
    assert (box["NAME"], box["NUM_CONV"], box["NUM_FC"]) == ("FastRCNNConvFCHead", 4, 1)
    assert box["NORM"] == "SyncBN"
    assert model["ROI_MASK_HEAD"]["NORM"] == "SyncBN"
    assert model["ROI_HEADS"]["NUM_CLASSES"] == 80
    assert (solver["MAX_ITER"], solver["STEPS"]) == (90000, [60000, 80000])
    assert cfg["INPUT"]["MIN_SIZE_TRAIN"] == list(range(640, 801, 32))
    assert cfg["DATASETS"] == {"TRAIN": ["coco_2017_train"], "TEST": ["coco_2017_val"]}


# --------------------------------------------------------------------------- mm ResNet


@pytest.mark.parametrize("relative", MM_RESNET_CONFIGS)
def test_mm_resnet_configs_load_the_exported_weights(relative):
    config = load_mm(relative)
    model = config["model"]
    backbone = model["backbone"]
    assert model["pretrained"] is None
    assert (backbone["type"], backbone["style"], backbone["depth"]) == ("ResNet", "pytorch", 50)
    assert not backbone.get("deep_stem", False)
    assert backbone["init_cfg"] == {"type": "Pretrained", "checkpoint": MM_RESNET_WEIGHTS}
    assert backbone["init_cfg"]["checkpoint"].endswith(".pth")
    assert backbone["norm_cfg"]["type"] == "SyncBN"
    normalizers = list(find_typed(config, "Normalize"))
    assert len(normalizers) >= 2  # train and test pipelines
    for norm in normalizers:
        assert (norm["mean"], norm["std"], norm["to_rgb"]) == (TORCHVISION_MEAN, TORCHVISION_STD, True)
    assert config["optimizer"]["type"] == "SGD"
    assert config["runner"]["type"] == "IterBasedRunner"


MM_RESNET_PROTOCOLS = {
    # file: (classes, iterations, lr, weight decay, lr policy, steps, crop, dilations, strides)
    "mmseg/fcn_d6_r50-d16_513x513_30k_voc12aug.py": (
        21,
        30000,
        0.003,
        1e-4,
        "step",
        [21000, 27000],
        (513, 513),
        (1, 1, 1, 2),
        (1, 2, 2, 1),
    ),
    "mmseg/fcn_d6_r50-d16_769x769_90k_cityscapes.py": (
        19,
        90000,
        0.01,
        1e-4,
        "step",
        [63000, 81000],
        (769, 769),
        (1, 1, 1, 2),
        (1, 2, 2, 1),
    ),
    "mmseg/fcn_r50-d8_512x512_80k_ade20k.py": (
        150,
        80000,
        0.01,
        5e-4,
        "poly",
        None,
        (512, 512),
        (1, 1, 2, 4),
        (1, 2, 1, 1),
    ),
}


@pytest.mark.parametrize("relative", MM_RESNET_CONFIGS)
def test_mm_resnet_protocol_numbers(relative):
    classes, iters, lr, wd, policy, steps, crop, dilations, strides = MM_RESNET_PROTOCOLS[relative]
    config = load_mm(relative)
    model = config["model"]
    assert (model["backbone"]["dilations"], model["backbone"]["strides"]) == (dilations, strides)
    assert model["decode_head"]["num_classes"] == classes
    if "auxiliary_head" in model:
        assert model["auxiliary_head"]["num_classes"] == classes
    assert config["runner"]["max_iters"] == iters
    assert (config["optimizer"]["lr"], config["optimizer"]["weight_decay"]) == (lr, wd)
    assert config["lr_config"]["policy"] == policy and config["lr_config"]["by_epoch"] is False
    if steps is not None:
        assert config["lr_config"]["step"] == steps
    crops = [t["crop_size"] for t in find_typed(config["train_pipeline"], "RandomCrop")]
    assert crops == [crop]
    resize = next(find_typed(config["train_pipeline"], "Resize"))
    assert resize["ratio_range"] == (0.5, 2.0)
    assert list(find_typed(config["train_pipeline"], "RandomFlip"))


@pytest.mark.parametrize("relative", MM_RESNET_CONFIGS[:2])
def test_mm_fcn_d6_head(relative):
    config = load_mm(relative)
    head = config["model"]["decode_head"]
    assert (head["type"], head["num_convs"], head["channels"], head["dilation"]) == ("FCNHead", 2, 256, 6)
    assert head["concat_input"] is False and head["dropout_ratio"] == 0
    assert head["align_corners"] is True
    assert "auxiliary_head" not in config["model"]
    # total batch 16 on 8 GPUs
    assert config["data"]["samples_per_gpu"] * 8 == 16


def test_mm_voc_uses_train_and_aug_splits():
    config = load_mm("mmseg/fcn_d6_r50-d16_513x513_30k_voc12aug.py")
    train = config["data"]["train"]
    assert train["ann_dir"] == ["SegmentationClass", "SegmentationClassAug"]
    assert [Path(split).name for split in train["split"]] == ["train.txt", "aug.txt"]
    assert config["model"]["test_cfg"] == {"mode": "whole"}
    assert config["img_scale"] == (2049, 513)


def test_mm_cityscapes_slides():
    config = load_mm("mmseg/fcn_d6_r50-d16_769x769_90k_cityscapes.py")
    test_cfg = config["model"]["test_cfg"]
    assert (test_cfg["mode"], test_cfg["crop_size"], test_cfg["stride"]) == ("slide", (769, 769), (513, 513))


def test_mm_ade20k_fcn_d8():
    config = load_mm("mmseg/fcn_r50-d8_512x512_80k_ade20k.py")
    assert config["model"]["auxiliary_head"]["type"] == "FCNHead"
    loads = list(find_typed(config["train_pipeline"], "LoadAnnotations"))
    assert [load["reduce_zero_label"] for load in loads] == [True]
    assert list(find_typed(config["train_pipeline"], "PhotoMetricDistortion"))
    assert config["data"]["samples_per_gpu"] * 4 == 16
    # ADE20KDataset sets reduce_zero_label itself and rejects it as an argument
    assert all("reduce_zero_label" not in config["data"][split] for split in ("train", "val", "test"))


# --------------------------------------------------------------------------- ViT-S/16


@pytest.mark.parametrize("relative", VIT_CONFIGS)
def test_vit_configs_describe_the_exported_vit_s16(relative):
    config = load_mm(relative)
    backbone = config["model"]["backbone"]
    assert backbone["type"] == "TimmStyleViT"
    assert (backbone["embed_dim"], backbone["num_heads"], backbone["depth"]) == (384, 8, 12)
    assert (backbone["patch_size"], backbone["mlp_ratio"], backbone["qkv_bias"]) == (16, 4, True)
    assert vit_checkpoint(config) == VIT_WEIGHTS
    assert config["model"].get("pretrained") is None
    # the custom class is documented in the file that uses it
    text = (TRANSFER / relative).read_text()
    assert "MGC" in text and "--to vit" in text


def test_vit_semantic_fpn_ade20k():
    config = load_mm("mmseg/semfpn_vits16_512x512_40k_ade20k.py")
    model = config["model"]
    assert model["backbone"]["out_indices"] == (2, 5, 8, 11) and model["backbone"]["simple_pyramid"]
    assert (model["neck"]["type"], model["neck"]["in_channels"]) == ("FPN", [384] * 4)
    head = model["decode_head"]
    assert (head["type"], head["num_classes"], head["feature_strides"]) == ("FPNHead", 150, [4, 8, 16, 32])
    assert config["runner"]["max_iters"] == 40000
    optimizer = config["optimizer"]
    assert (optimizer["type"], optimizer["lr"], optimizer["weight_decay"]) == ("AdamW", 2e-4, 0.01)
    assert set(optimizer["paramwise_cfg"]["custom_keys"]) == {"pos_embed", "cls_token", "norm"}
    lr = config["lr_config"]
    assert (lr["policy"], lr["power"], lr["warmup_iters"]) == ("poly", 1.0, 1500)
    for norm in find_typed(config, "Normalize"):
        assert (norm["mean"], norm["std"], norm["to_rgb"]) == (TORCHVISION_MEAN, TORCHVISION_STD, True)
    assert [t["crop_size"] for t in find_typed(config["train_pipeline"], "RandomCrop")] == [(512, 512)]
    assert [t["reduce_zero_label"] for t in find_typed(config["train_pipeline"], "LoadAnnotations")] == [True]
    assert all("reduce_zero_label" not in config["data"][split] for split in ("train", "val", "test"))


def test_vit_mask_rcnn_coco():
    config = load_mm("mmdet/mask_rcnn_vits16_fpn_1x_coco.py")
    model = config["model"]
    assert model["type"] == "MaskRCNN"
    assert model["backbone"]["out_indices"] == (3, 5, 7, 11) and model["backbone"]["drop_path_rate"] == 0
    assert model["neck"]["in_channels"] == [384] * 4
    roi = model["roi_head"]
    assert roi["bbox_head"]["num_classes"] == 80 and roi["mask_head"]["num_classes"] == 80
    assert roi["bbox_roi_extractor"]["featmap_strides"] == [4, 8, 16, 32]
    assert config["runner"] == {"type": "EpochBasedRunner", "max_epochs": 12}
    assert (config["lr_config"]["step"], config["lr_config"]["warmup_iters"]) == ([8, 11], 1000)
    optimizer = config["optimizer"]
    assert (optimizer["type"], optimizer["lr"], optimizer["weight_decay"]) == ("AdamW", 7.5e-5, 0.03)
    assert config["data"]["samples_per_gpu"] == 1
    for norm in find_typed(config, "Normalize"):
        assert (norm["mean"], norm["std"], norm["to_rgb"]) == (TORCHVISION_MEAN, TORCHVISION_STD, True)
    assert list(find_typed(config["train_pipeline"], "AutoAugment"))


def test_vitpose_small_coco():
    config = load_mm("mmpose/vitpose_small_256x192_coco.py")
    model = config["model"]
    codec = config["codec"]
    assert (codec["type"], codec["input_size"], codec["heatmap_size"], codec["sigma"]) == (
        "UDPHeatmap",
        (192, 256),
        (48, 64),
        2,
    )
    assert model["backbone"]["img_size"] == (256, 192) and not model["backbone"]["simple_pyramid"]
    head = model["head"]
    assert (head["out_channels"], head["in_channels"], head["deconv_out_channels"]) == (17, 384, (256, 256))
    assert head["decoder"] == codec and model["test_cfg"]["flip_test"] is True
    preprocessor = model["data_preprocessor"]
    assert (preprocessor["mean"], preprocessor["std"], preprocessor["bgr_to_rgb"]) == (
        TORCHVISION_MEAN,
        TORCHVISION_STD,
        True,
    )
    for affine in find_typed(config, "TopdownAffine"):
        assert affine["input_size"] == codec["input_size"] and affine["use_udp"] is True
    assert config["train_cfg"]["max_epochs"] == 210
    optimizer = config["optim_wrapper"]["optimizer"]
    assert (optimizer["type"], optimizer["lr"], optimizer["weight_decay"]) == ("AdamW", 5e-4, 0.05)
    steps = next(find_typed(config["param_scheduler"], "MultiStepLR"))
    assert steps["milestones"] == [170, 200]
    assert config["auto_scale_lr"]["base_batch_size"] == config["train_dataloader"]["batch_size"] * 8 == 512


# --------------------------------------------------------------------------- README


def readme_rows() -> list[dict[str, str]]:
    """The protocol table of configs/transfer/README.md, one dict per row."""
    rows = []
    for line in README.read_text().splitlines():
        if not line.startswith("|") or "configs/transfer/" not in line:
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 5, f"README row with {len(cells)} cells: {line}"
        rows.append(dict(zip(["protocol", "framework", "config", "export", "train"], cells, strict=True)))
    return rows


def expected_export(relative: str) -> tuple[set[str], str]:
    """Export formats a config accepts and the path it loads."""
    if relative in D2_CONFIGS:
        return {"detectron2"}, load_d2(relative)["MODEL"]["WEIGHTS"]
    config = load_mm(relative)
    if relative in VIT_CONFIGS:
        return {"vit"}, vit_checkpoint(config)
    return {"mmseg", "mmdet"}, config["model"]["backbone"]["init_cfg"]["checkpoint"]


def test_readme_rows_match_the_configs():
    rows = readme_rows()
    described = []
    for row in rows:
        config = re.fullmatch(r"`(configs/transfer/(\S+\.(?:yaml|py)))`", row["config"])
        assert config, f"config cell {row['config']!r}"
        path, relative = config.group(1), config.group(2)
        assert (ROOT / path).is_file(), f"README names a missing file {path}"
        described.append(relative)
        export = re.fullmatch(r"`densessl export CKPT --to (\w+) --out (\S+)`", row["export"])
        assert export, f"export cell {row['export']!r}"
        to, out = export.groups()
        assert to in {"detectron2", "mmdet", "mmseg", "vit"}
        formats, loaded = expected_export(relative)
        assert to in formats, f"{relative} loads {formats}, README exports --to {to}"
        assert out == loaded, f"{relative} loads {loaded}, README exports to {out}"
        assert out.endswith(".pkl" if to == "detectron2" else ".pth")
        train = row["train"]
        assert path in train and out in train, f"train command of {relative} misses the config or weights"
        framework = relative.split("/")[0]
        if framework == "detectron2":
            assert f"--config-file {path}" in train and f"MODEL.WEIGHTS {out}" in train
        else:
            key = "model.backbone.pretrained" if to == "vit" else "model.backbone.init_cfg.checkpoint"
            assert re.search(rf"tools/dist_train\.sh {re.escape(path)} \d+ --cfg-options {key}=", train)
        pinned = {"detectron2": "v0.6", "mmseg": "v0.30.0", "mmdet": "v2.26.0", "mmpose": "v1.2.0"}
        assert pinned[framework] in row["framework"]
    assert sorted(described) == sorted(RUNNABLE), "every runnable config needs exactly one README row"


def test_readme_states_versions_dependencies_and_the_normalisation_change():
    text = README.read_text()
    for version in ("v0.6", "v0.30.0", "v2.26.0", "v1.2.0"):
        assert version in text
    assert "not dependencies of densessl" in text
    assert "[123.675, 116.28, 103.53]" in text and "[58.395, 57.12, 57.375]" in text
    assert "TimmStyleViT" in text and "Res5ROIHeadsExtraNorm" in text
