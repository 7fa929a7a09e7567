# COCO detection and instance segmentation transfer of a ViT-S/16 (MGC protocol): Mask R-CNN with
# an FPN on a simple feature pyramid of the ViT, 1x schedule (12 epochs, lr x0.1 after epochs 8 and
# 11), AdamW, DETR-style multi-scale + crop augmentation, 8 GPUs x 1 image.
# Metrics: COCO bbox AP and segm AP on val2017.
# mmdetection 2.x config (written for v2.26.0); self-contained, no _base_ files.
#
# Weights: `densessl export CKPT --to vit --out pretrained/densessl_vits16.pth`, a bare state dict
# with timm-style ViT names (patch_embed.proj.*, cls_token, pos_embed, blocks.N.*, norm.*).
#
# Backbone class: `TimmStyleViT` is not shipped by mmdet (whose own ViT classes use other names).
# Register it from your code (for example with
#   custom_imports = dict(imports=['my_project.timm_style_vit'], allow_failed_imports=False)
# ), or adapt the ViT class of the MGC transfer code: it uses the same names for the ViT shape
# arguments and `pretrained`, and always builds the pyramid (drop `simple_pyramid`, change `type` to
# the name it is registered under). The class is expected to:
#   - hold timm-named parameters (embed 384, depth 12, 8 heads, MLP ratio 4, qkv bias, class token,
#     fixed 2-D sin-cos position embedding) and interpolate `pos_embed` bicubically to the input's
#     patch grid (training images vary in size);
#   - load `pretrained` itself with strict=False, resizing `pos_embed` when the grid differs, and
#     fail (not just log) when any backbone parameter is missing from the file;
#   - apply the final LayerNorm to the patch tokens of blocks `out_indices` and turn them into a
#     simple pyramid of strides 4/8/16/32 (two 2x2 transposed convs with SyncBN + GELU between,
#     one 2x2 transposed conv, identity, 2x2 max-pool), 384 channels each.

model = dict(
    type='MaskRCNN',
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
        out_indices=(3, 5, 7, 11),
        simple_pyramid=True,
        pretrained='pretrained/densessl_vits16.pth',
    ),
    neck=dict(type='FPN', in_channels=[384, 384, 384, 384], out_channels=256, num_outs=5),
    rpn_head=dict(
        type='RPNHead',
        in_channels=256,
        feat_channels=256,
        anchor_generator=dict(
            type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64]
        ),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0], target_stds=[1.0, 1.0, 1.0, 1.0]
        ),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0),
    ),
    roi_head=dict(
        type='StandardRoIHead',
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=256,
            featmap_strides=[4, 8, 16, 32],
        ),
        bbox_head=dict(
            type='Shared2FCBBoxHead',
            in_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=80,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[0.0, 0.0, 0.0, 0.0],
                target_stds=[0.1, 0.1, 0.2, 0.2],
            ),
            reg_class_agnostic=False,
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0),
        ),
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
            out_channels=256,
            featmap_strides=[4, 8, 16, 32],
        ),
        mask_head=dict(
            type='FCNMaskHead',
            num_convs=4,
            in_channels=256,
            conv_out_channels=256,
            num_classes=80,
            loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0),
        ),
    ),
    train_cfg=dict(
        rpn=dict(
            assigner=dict(
                type='MaxIoUAssigner',
                pos_iou_thr=0.7,
                neg_iou_thr=0.3,
                min_pos_iou=0.3,
                match_low_quality=True,
                ignore_iof_thr=-1,
            ),
            sampler=dict(
                type='RandomSampler', num=256, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False
            ),
            allowed_border=-1,
            pos_weight=-1,
            debug=False,
        ),
        rpn_proposal=dict(
            nms_pre=2000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0
        ),
        rcnn=dict(
            assigner=dict(
                type='MaxIoUAssigner',
                pos_iou_thr=0.5,
                neg_iou_thr=0.5,
                min_pos_iou=0.5,
                match_low_quality=True,
                ignore_iof_thr=-1,
            ),
            sampler=dict(
                type='RandomSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True
            ),
            mask_size=28,
            pos_weight=-1,
            debug=False,
        ),
    ),
    test_cfg=dict(
        rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
        rcnn=dict(
            score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100, mask_thr_binary=0.5
        ),
    ),
)

# dataset: data/coco with annotations/instances_{train,val}2017.json
dataset_type = 'CocoDataset'
data_root = 'data/coco/'
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
# shorter side 480..800 in steps of 32, longer side at most 1333
multi_scales = [
    (480, 1333),
    (512, 1333),
    (544, 1333),
    (576, 1333),
    (608, 1333),
    (640, 1333),
    (672, 1333),
    (704, 1333),
    (736, 1333),
    (768, 1333),
    (800, 1333),
]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', flip_ratio=0.5),
    # DETR-style augmentation: either a multi-scale resize, or resize + random crop + multi-scale
    # resize, chosen with equal probability per image
    dict(
        type='AutoAugment',
        policies=[
            [dict(type='Resize', img_scale=multi_scales, multiscale_mode='value', keep_ratio=True)],
            [
                dict(
                    type='Resize',
                    img_scale=[(400, 1333), (500, 1333), (600, 1333)],
                    multiscale_mode='value',
                    keep_ratio=True,
                ),
                dict(
                    type='RandomCrop',
                    crop_type='absolute_range',
                    crop_size=(384, 600),
                    allow_negative_crop=True,
                ),
                dict(
                    type='Resize',
                    img_scale=multi_scales,
                    multiscale_mode='value',
                    override=True,
                    keep_ratio=True,
                ),
            ],
        ],
    ),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size_divisor=32),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels', 'gt_masks']),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='MultiScaleFlipAug',
        img_scale=(1333, 800),
        flip=False,
        transforms=[
            dict(type='Resize', keep_ratio=True),
            dict(type='RandomFlip'),
            dict(type='Normalize', **img_norm_cfg),
            dict(type='Pad', size_divisor=32),
            dict(type='ImageToTensor', keys=['img']),
            dict(type='Collect', keys=['img']),
        ],
    ),
]
data = dict(
    samples_per_gpu=1,
    workers_per_gpu=2,
    train=dict(
        type=dataset_type,
        ann_file=data_root + 'annotations/instances_train2017.json',
        img_prefix=data_root + 'train2017/',
        pipeline=train_pipeline,
    ),
    val=dict(
        type=dataset_type,
        ann_file=data_root + 'annotations/instances_val2017.json',
        img_prefix=data_root + 'val2017/',
        pipeline=test_pipeline,
    ),
    test=dict(
        type=dataset_type,
        ann_file=data_root + 'annotations/instances_val2017.json',
        img_prefix=data_root + 'val2017/',
        pipeline=test_pipeline,
    ),
)
evaluation = dict(interval=1, metric=['bbox', 'segm'])

# schedule: AdamW without weight decay on the position embedding, class token and norms;
# linear warm-up for 1000 iterations, lr x0.1 after epochs 8 and 11 of 12
optimizer = dict(
    type='AdamW',
    lr=7.5e-5,
    betas=(0.9, 0.999),
    weight_decay=0.03,
    paramwise_cfg=dict(
        custom_keys={
            'pos_embed': dict(decay_mult=0.0),
            'cls_token': dict(decay_mult=0.0),
            'norm': dict(decay_mult=0.0),
        }
    ),
)
optimizer_config = dict(grad_clip=None)
lr_config = dict(policy='step', warmup='linear', warmup_iters=1000, warmup_ratio=0.001, step=[8, 11])
runner = dict(type='EpochBasedRunner', max_epochs=12)
# the lr above is for 8 images per iteration (8 GPUs x 1); pass --auto-scale-lr to rescale it
auto_scale_lr = dict(enable=False, base_batch_size=8)

# runtime
checkpoint_config = dict(interval=1)
log_config = dict(interval=50, hooks=[dict(type='TextLoggerHook')])
custom_hooks = [dict(type='NumClassCheckHook')]
dist_params = dict(backend='nccl')
log_level = 'INFO'
load_from = None
resume_from = None
workflow = [('train', 1)]
opencv_num_threads = 0
mp_start_method = 'fork'
