# ADE20K semantic segmentation transfer of a ViT-S/16 (MGC protocol): Semantic FPN (FPN neck +
# FPNHead) on a ViT-S/16 with a simple feature pyramid, 512x512 crops, 40k iterations, AdamW with a
# poly schedule and 1500 warm-up iterations, 8 GPUs x 4 images. Metric: mIoU on val (150 classes).
# mmsegmentation 0.x config (written for v0.30.0); self-contained, no _base_ files.
#
# Weights: `densessl export CKPT --to vit --out pretrained/densessl_vits16.pth`, a bare state dict
# with timm-style ViT names (patch_embed.proj.*, cls_token, pos_embed, blocks.N.*, norm.*).
#
# Backbone class: mmseg's own `VisionTransformer` uses other parameter names (layers.N.*, ln1, ...)
# and would load nothing, so `TimmStyleViT` below is a class that mmseg does not ship. Register it
# from your code (for example with
#   custom_imports = dict(imports=['my_project.timm_style_vit'], allow_failed_imports=False)
# ), or adapt the ViT class of the MGC transfer code: it uses the same names for the ViT shape
# arguments and `pretrained`, and always builds the pyramid (drop `simple_pyramid`, change `type` to
# the name it is registered under). The class is expected to:
#   - hold timm-named parameters (embed 384, depth 12, 8 heads, MLP ratio 4, qkv bias, LayerNorm
#     eps 1e-6, class token, fixed 2-D sin-cos position embedding) and interpolate `pos_embed`
#     bicubically to the input's patch grid;
#   - load `pretrained` itself with strict=False, resizing `pos_embed` when the grid differs, and
#     fail (not just log) when any backbone parameter is missing from the file;
#   - apply the final LayerNorm to the patch tokens of blocks `out_indices` and turn them into a
#     simple pyramid of strides 4/8/16/32 (two 2x2 transposed convs with SyncBN + GELU between,
#     one 2x2 transposed conv, identity, 2x2 max-pool), 384 channels each.

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    pretrained=None,
    backbone=dict(
        type='TimmStyleViT',
        img_size=224,
        patch_size=16,
        in_chans=3,
        embed_dim=384,
        depth=12,
        num_heads=8,
        mlp_ratio=4,
        qkv_bias=True,
        drop_path_rate=0.0,
        out_indices=(2, 5, 8, 11),
        simple_pyramid=True,
        pretrained='pretrained/densessl_vits16.pth',
    ),
    neck=dict(type='FPN', in_channels=[384, 384, 384, 384], out_channels=256, num_outs=4),
    decode_head=dict(
        type='FPNHead',
        in_channels=[256, 256, 256, 256],
        in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32],
        channels=128,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'),
)

# dataset: data/ade/ADEChallengeData2016, labels shifted by reduce_zero_label (0 -> 255, k -> k-1),
# set in the loading step below and by ADE20KDataset itself (which does not accept it as an argument)
dataset_type = 'ADE20KDataset'
data_root = 'data/ade/ADEChallengeData2016'
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
img_scale = (2048, 512)
crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='Resize', img_scale=img_scale, ratio_range=(0.5, 2.0)),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size=crop_size, pad_val=0, seg_pad_val=255),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_semantic_seg']),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='MultiScaleFlipAug',
        img_scale=img_scale,
        flip=False,
        transforms=[
            dict(type='Resize', keep_ratio=True),
            dict(type='RandomFlip'),
            dict(type='Normalize', **img_norm_cfg),
            dict(type='ImageToTensor', keys=['img']),
            dict(type='Collect', keys=['img']),
        ],
    ),
]
data = dict(
    samples_per_gpu=4,
    workers_per_gpu=4,
    train=dict(
        type=dataset_type,
        data_root=data_root,
        img_dir='images/training',
        ann_dir='annotations/training',
        pipeline=train_pipeline,
    ),
    val=dict(
        type=dataset_type,
        data_root=data_root,
        img_dir='images/validation',
        ann_dir='annotations/validation',
        pipeline=test_pipeline,
    ),
    test=dict(
        type=dataset_type,
        data_root=data_root,
        img_dir='images/validation',
        ann_dir='annotations/validation',
        pipeline=test_pipeline,
    ),
)

# schedule: AdamW without weight decay on the position embedding, class token and norms;
# linear warm-up for 1500 iterations, then poly decay (power 1.0) to 0 at 40k iterations
optimizer = dict(
    type='AdamW',
    lr=2e-4,
    betas=(0.9, 0.999),
    weight_decay=0.01,
    paramwise_cfg=dict(
        custom_keys={
            'pos_embed': dict(decay_mult=0.0),
            'cls_token': dict(decay_mult=0.0),
            'norm': dict(decay_mult=0.0),
        }
    ),
)
optimizer_config = dict()
lr_config = dict(
    policy='poly',
    warmup='linear',
    warmup_iters=1500,
    warmup_ratio=1e-6,
    power=1.0,
    min_lr=0.0,
    by_epoch=False,
)
runner = dict(type='IterBasedRunner', max_iters=40000)
checkpoint_config = dict(by_epoch=False, interval=4000)
evaluation = dict(interval=4000, metric='mIoU', pre_eval=True)

# runtime
log_config = dict(interval=50, hooks=[dict(type='TextLoggerHook', by_epoch=False)])
dist_params = dict(backend='nccl')
log_level = 'INFO'
load_from = None
resume_from = None
workflow = [('train', 1)]
cudnn_benchmark = True
