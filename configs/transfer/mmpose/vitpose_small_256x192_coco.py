# COCO keypoint transfer of a ViT-S/16 (MGC protocol): top-down heatmap estimation in the style of
# ViTPose-small: 256x192 person crops, ViT-S/16 (one stride-16 feature map), two 256-channel
# deconvolutions to 64x48 heatmaps (UDP, sigma 2), 17 keypoints, AdamW, 210 epochs with lr x0.1
# after epochs 170 and 200, batch 512 (8 GPUs x 64), flip test. Metric: COCO keypoint AP on val2017,
# evaluated on the person boxes of the common detection file (COCO_val2017_detections_AP_H_56).
# mmpose 1.x config (written for v1.2.0, mmengine-based); self-contained, no _base_ files.
#
# Weights: `densessl export CKPT --to vit --out pretrained/densessl_vits16.pth`, a bare state dict
# with timm-style ViT names (patch_embed.proj.*, cls_token, pos_embed, blocks.N.*, norm.*).
#
# Backbone class: `TimmStyleViT` is not shipped by mmpose (ViTPose configs there build mmpretrain's
# VisionTransformer, whose parameter names differ). Register it from your code (for example with
#   custom_imports = dict(imports=['my_project.timm_style_vit'], allow_failed_imports=False)
# ), or adapt the ViT class of the MGC transfer code (same names for the ViT shape arguments;
# check how it takes the weights, and change `type` to its registered name). The class is expected
# to hold timm-named parameters (embed 384, depth 12, 8 heads, MLP ratio 4, qkv bias, class token,
# fixed 2-D sin-cos position embedding, on a 16x12 grid here), to load `pretrained` itself with
# strict=False, resizing `pos_embed` bicubically from the 14x14 pre-training grid and failing when
# any backbone parameter is missing, and, with simple_pyramid=False, to return the final-LayerNorm
# patch tokens of the last block as one 384-channel map of stride 16 (16x12 for a 256x192 input).

# runtime
default_scope = 'mmpose'
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook', interval=10, save_best='coco/AP', rule='greater', max_keep_ckpts=1
    ),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='PoseVisualizationHook', enable=False),
)
custom_hooks = [dict(type='SyncBuffersHook')]
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='PoseLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True, num_digits=6)
log_level = 'INFO'
load_from = None
resume = False
backend_args = dict(backend='local')

# schedule
train_cfg = dict(by_epoch=True, max_epochs=210, val_interval=10)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=0.05))
param_scheduler = [
    # linear warm-up over the first 500 iterations
    dict(type='LinearLR', begin=0, end=500, start_factor=0.001, by_epoch=False),
    dict(type='MultiStepLR', begin=0, end=210, milestones=[170, 200], gamma=0.1, by_epoch=True),
]
# the lr above is for 512 images per iteration; pass --auto-scale-lr to rescale it
auto_scale_lr = dict(base_batch_size=512)

# codec: input crops of width 192 and height 256 (mmpose writes sizes as (w, h)), heatmaps 48x64
codec = dict(type='UDPHeatmap', input_size=(192, 256), heatmap_size=(48, 64), sigma=2)

# model
model = dict(
    type='TopdownPoseEstimator',
    data_preprocessor=dict(
        type='PoseDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
    ),
    backbone=dict(
        type='TimmStyleViT',
        img_size=(256, 192),
        patch_size=16,
        in_chans=3,
        embed_dim=384,
        depth=12,
        num_heads=8,
        mlp_ratio=4,
        qkv_bias=True,
        drop_path_rate=0.0,
        out_indices=(11,),
        simple_pyramid=False,
        pretrained='pretrained/densessl_vits16.pth',
    ),
    head=dict(
        type='HeatmapHead',
        in_channels=384,
        out_channels=17,
        deconv_out_channels=(256, 256),
        deconv_kernel_sizes=(4, 4),
        loss=dict(type='KeypointMSELoss', use_target_weight=True),
        decoder=codec,
    ),
    test_cfg=dict(flip_test=True, flip_mode='heatmap', shift_heatmap=False),
)

# dataset: data/coco with annotations/person_keypoints_{train,val}2017.json and the person
# detections person_detection_results/COCO_val2017_detections_AP_H_56_person.json
dataset_type = 'CocoDataset'
data_mode = 'topdown'
data_root = 'data/coco/'
train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='RandomFlip', direction='horizontal'),
    dict(type='RandomHalfBody'),
    dict(type='RandomBBoxTransform'),
    dict(type='TopdownAffine', input_size=(192, 256), use_udp=True),
    dict(type='GenerateTarget', encoder=codec),
    dict(type='PackPoseInputs'),
]
val_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='TopdownAffine', input_size=(192, 256), use_udp=True),
    dict(type='PackPoseInputs'),
]
train_dataloader = dict(
    batch_size=64,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_mode=data_mode,
        ann_file='annotations/person_keypoints_train2017.json',
        data_prefix=dict(img='train2017/'),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=32,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_mode=data_mode,
        ann_file='annotations/person_keypoints_val2017.json',
        bbox_file=data_root + 'person_detection_results/COCO_val2017_detections_AP_H_56_person.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=val_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', ann_file=data_root + 'annotations/person_keypoints_val2017.json')
test_evaluator = val_evaluator
