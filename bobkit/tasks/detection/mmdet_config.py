"""The mmdetection 3.x config of a detection run, generated from its RunSpec in ONE function.

Every value that reaches mmdet is written out in `mmdet_config` (and the two pipeline/head
helpers it calls), from the RunSpec's hparams or as a named constant with its source; no `_base_`
files, nothing left to an mmdet default that the authors' configs set (hsouri/bob-detection@d6702e7
configs/bob/**, hsouri/bob-ood-detection@41b7dcf bob_sim2real/**).

Two templates, as the authors used them:
- single-scale backbones (plain ViTs): ViTDet style — simple feature pyramid, 2-conv RPN,
  4conv1fc box heads and mask head with LayerNorm, smooth-L1 box loss;
- hierarchical backbones (ResNet, ConvNeXt, SwinV2, MiDaS, SD): FPN, 4conv1fc box heads with
  BatchNorm (SyncBN across GPUs), GIoU loss ×10 on decoded boxes.
"""

from __future__ import annotations

from typing import Any

from bobkit.manifest.hparams import DetectionHparams

# Constants the RunSpec does not carry, as the authors' CNN-template configs set them (hsouri/bob-detection
# @d6702e7 configs/bob/resnet/*, convnext/*, swinv2/*). Their ViTDet template (configs/bob/ViTDet/
# cascade_mask_rcnn_vitdet-b_fpn_3x_coco_base.py) differs in the cascade IoUs, RPN proposals and
# border, class-agnostic regression and pyramid widths; bobkit does not express that yet.
WARMUP_START_FACTOR = 0.001  # linear warmup from lr × 0.001 (mmdet 2.x `warmup_ratio` of the authors' runtime)
LR_DECAY = 0.1  # step schedule: ×0.1 at each of lr_steps
FP16_INIT_SCALE = 512.0  # the authors' fp16 loss scale
FPN_CHANNELS = 256
LSJ_RATIO = (0.1, 2.0)
DETR_SHORT_SIDES = tuple(range(480, 801, 32))  # DETR multi-scale at the 1333x800 reference
DETR_CROP_RESIZE = (400, 500, 600)
DETR_CROP = (384, 600)
DETR_REFERENCE = (1333, 800)  # (longest side, shortest side)
CASCADE_IOUS = (0.5, 0.6, 0.7)
CASCADE_STDS = ((0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067))
CASCADE_LOSS_WEIGHTS = (1.0, 0.5, 0.25)
CHECKPOINTS_KEPT = 1  # the newest epoch is enough to resume; the authors kept every epoch
# Proposals kept after the RPN (train, test), RoIs sampled per image for each cascade stage and
# detections kept per image: mmdet's Cascade R-CNN values. A smoke run (64 px images, a few
# objects each) keeps far fewer, since the 4-conv box and mask heads over every RoI dominate a CPU
# step; it also lets anchors cross the image border, as LSJ shrinks a 64 px image to a few pixels,
# and keeps its untrained model's low-scoring boxes, so that the COCO evaluation has boxes to score.
PROPOSALS = {"train": 2000, "test": 1000, "rois": 512, "detections": 100, "allowed_border": 0, "score_thr": 0.05}
SMOKE_PROPOSALS = {"train": 50, "test": 20, "rois": 16, "detections": 20, "allowed_border": -1, "score_thr": 0.0}


def _scaled(size: int, resolution: int) -> int:
    """A size of the 1333x800 reference at `resolution` = the longest side (1333 in the recipe)."""
    return max(1, round(size * resolution / DETR_REFERENCE[0]))


def train_test_pipelines(hp: DetectionHparams, with_masks: bool) -> tuple[list[dict], list[dict]]:
    """Train and test pipelines of the spec's `train_pipeline` at its `resolution` (see module doc)."""
    res = hp.resolution
    load = [dict(type="LoadImageFromFile", backend_args=None),
            dict(type="LoadAnnotations", with_bbox=True, with_mask=with_masks)]
    pack_test = dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor"))
    kind = hp.train_pipeline
    if kind == "lsj":  # large-scale jitter; the data preprocessor pads to res x res
        train = load + [
            dict(type="RandomResize", scale=(res, res), ratio_range=LSJ_RATIO, keep_ratio=True),
            dict(type="RandomCrop", crop_type="absolute_range", crop_size=(res, res), recompute_bbox=True,
                 allow_negative_crop=True),
            dict(type="FilterAnnotations", min_gt_bbox_wh=(1e-2, 1e-2)),
            dict(type="RandomFlip", prob=0.5),
            dict(type="PackDetInputs"),
        ]
        test_scale = (res, res)
    elif kind == "detr_multiscale":  # the DETR multi-scale schedule; res is the longest side (1333)
        long_side = res
        scales = [(long_side, _scaled(s, res)) for s in DETR_SHORT_SIDES]
        train = load + [
            dict(type="RandomFlip", prob=0.5),
            dict(type="RandomChoice", transforms=[
                [dict(type="RandomChoiceResize", scales=scales, keep_ratio=True)],
                [dict(type="RandomChoiceResize", scales=[(long_side, _scaled(s, res)) for s in DETR_CROP_RESIZE],
                      keep_ratio=True),
                 dict(type="RandomCrop", crop_type="absolute_range",
                      crop_size=tuple(_scaled(s, res) for s in DETR_CROP), allow_negative_crop=True),
                 dict(type="RandomChoiceResize", scales=scales, keep_ratio=True)],
            ]),
            dict(type="PackDetInputs"),
        ]
        test_scale = (long_side, _scaled(DETR_REFERENCE[1], res))
    elif kind == "fixed":  # Stable Diffusion: one square scale
        train = load + [dict(type="Resize", scale=(res, res), keep_ratio=True),
                        dict(type="RandomFlip", prob=0.5), dict(type="PackDetInputs")]
        test_scale = (res, res)
    else:
        raise ValueError(f"unknown train_pipeline {kind!r}")
    test = [dict(type="LoadImageFromFile", backend_args=None),
            dict(type="Resize", scale=test_scale, keep_ratio=True),
            dict(type="LoadAnnotations", with_bbox=True, with_mask=with_masks), pack_test]
    return train, test


def roi_heads(num_classes: int, with_masks: bool, vitdet: bool, head_norm: dict) -> dict[str, Any]:
    """Cascade RoI head: three box stages (IoU 0.5/0.6/0.7) and, for instance segmentation, a mask head."""
    strides = [4, 8, 16, 32]
    if vitdet:
        box = lambda stds: dict(  # noqa: E731
            type="Shared4Conv1FCBBoxHead", in_channels=FPN_CHANNELS, conv_out_channels=256, fc_out_channels=1024,
            roi_feat_size=7, num_classes=num_classes, norm_cfg=dict(type="BobkitLN2d"),
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=list(stds)),
            reg_class_agnostic=True, reg_decoded_bbox=False,
            loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type="SmoothL1Loss", beta=1.0, loss_weight=1.0))
    else:
        box = lambda stds: dict(  # noqa: E731
            type="ConvFCBBoxHead", num_shared_convs=4, num_shared_fcs=1, in_channels=FPN_CHANNELS,
            conv_out_channels=256, fc_out_channels=1024, roi_feat_size=7, num_classes=num_classes,
            norm_cfg=head_norm,
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=list(stds)),
            reg_class_agnostic=False, reg_decoded_bbox=True,
            loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type="GIoULoss", loss_weight=10.0))
    head: dict[str, Any] = dict(
        type="CascadeRoIHead", num_stages=3, stage_loss_weights=list(CASCADE_LOSS_WEIGHTS),
        bbox_roi_extractor=dict(type="SingleRoIExtractor", roi_layer=dict(type="RoIAlign", output_size=7,
                                sampling_ratio=0), out_channels=FPN_CHANNELS, featmap_strides=strides),
        bbox_head=[box(stds) for stds in CASCADE_STDS])
    if with_masks:
        head["mask_roi_extractor"] = dict(type="SingleRoIExtractor", roi_layer=dict(
            type="RoIAlign", output_size=14, sampling_ratio=0), out_channels=FPN_CHANNELS, featmap_strides=strides)
        head["mask_head"] = dict(
            type="FCNMaskHead", num_convs=4, in_channels=FPN_CHANNELS, conv_out_channels=256,
            num_classes=num_classes, norm_cfg=dict(type="BobkitLN2d") if vitdet else None,
            loss_mask=dict(type="CrossEntropyLoss", use_mask=True, loss_weight=1.0))
    return head


def optimization_facts(hp: DetectionHparams, world_size: int) -> dict[str, Any]:
    """The optimizer's numbers as mmdet_config sets them, for the run's provenance (`optimization`).

    mmengine accumulates `accumulation` iterations of per_gpu_batch images on each GPU before a step,
    so the effective batch is their product with world_size. The warm-up is warmup_iters iterations
    (data batches; warmup_steps in warmup_unit, as `bobkit explain` has it), since LinearLR with
    by_epoch=False steps once per iteration: warmup_optimizer_steps optimizer steps. The lr is the
    recipe's as given (auto_scale_lr is off).
    """
    from bobkit.manifest.derived import accumulation as accumulation_of

    accumulation = accumulation_of(hp.per_gpu_batch, hp.batch_size, world_size)
    return {"effective_lr": hp.lr, "effective_batch": hp.per_gpu_batch * world_size * accumulation,
            "per_gpu_batch": hp.per_gpu_batch, "world_size": world_size, "accumulation": accumulation,
            "warmup_iters": hp.warmup_iters, "warmup_steps": hp.warmup_iters, "warmup_unit": "iterations",
            "warmup_optimizer_steps": hp.warmup_iters / accumulation, "warmup_start_factor": WARMUP_START_FACTOR}


def mmdet_config(spec: Any, job: Any, layout: Any, *, world_size: int = 1, extra: dict | None = None) -> dict[str, Any]:
    """The whole mmengine/mmdet config dict of one run (hparams: job.hp, the spec's DetectionHparams).
    `layout` is the backbone's FeatureLayout."""
    hp = job.hp
    res = hp.resolution
    masks = job.with_masks
    num_classes = len(job.classes)
    neck_kind = layout.default_neck if hp.neck == "auto" else hp.neck
    vitdet = neck_kind == "simple_fpn"
    bs = spec.backbone_spec

    # Backbone → neck. The pyramid: strides of the neck's outputs (one extra, coarser level on top).
    # Pretrained weights from the zoo, except in smoke runs and evaluation-only runs (the upstream's weights).
    pretrained = hp.pretrained and not spec.smoke and job.train is not None
    backbone = dict(type="BobkitBackbone", backbone_spec=bs, pretrained=pretrained,
                    resolution=res, drop_path=hp.drop_path, frozen=hp.frozen, norm_eval=hp.norm_eval)
    if vitdet:
        base = layout.strides[0]
        neck = dict(type="BobkitSimpleFeaturePyramid", in_channels=layout.channels[0], out_channels=FPN_CHANNELS,
                    scale_factors=(4.0, 2.0, 1.0, 0.5), extra_level=True)
        pyramid = [int(base * s) for s in (0.25, 0.5, 1, 2, 4)]
    else:
        neck = dict(type="FPN", in_channels=list(layout.channels), out_channels=FPN_CHANNELS,
                    num_outs=len(layout.channels) + 1)
        pyramid = list(layout.strides) + [layout.strides[-1] * 2]
    head_norm = dict(type="SyncBN" if world_size > 1 else "BN", requires_grad=True)
    proposals = SMOKE_PROPOSALS if spec.smoke else PROPOSALS

    model = dict(
        type="CascadeRCNN",
        data_preprocessor=dict(
            type="DetDataPreprocessor", mean=[255.0 * m for m in bs["mean"]], std=[255.0 * s for s in bs["std"]],
            bgr_to_rgb=True, pad_mask=masks, pad_size_divisor=res if hp.train_pipeline == "lsj" else 32),
        backbone=backbone,
        neck=neck,
        rpn_head=dict(
            type="RPNHead", in_channels=FPN_CHANNELS, feat_channels=FPN_CHANNELS, num_convs=2 if vitdet else 1,
            anchor_generator=dict(type="AnchorGenerator", scales=[8], ratios=[0.5, 1.0, 2.0], strides=pyramid),
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
            loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
            loss_bbox=dict(type="SmoothL1Loss", beta=1.0 / 9.0, loss_weight=1.0)),
        roi_head=roi_heads(num_classes, masks, vitdet, head_norm),
        train_cfg=dict(
            rpn=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                                   match_low_quality=True, ignore_iof_thr=-1),
                     sampler=dict(type="RandomSampler", num=256, pos_fraction=0.5, neg_pos_ub=-1,
                                  add_gt_as_proposals=False),
                     allowed_border=proposals["allowed_border"], pos_weight=-1, debug=False),
            rpn_proposal=dict(nms_pre=proposals["train"], max_per_img=proposals["train"],
                              nms=dict(type="nms", iou_threshold=0.7),
                              min_bbox_size=0),
            rcnn=[dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                                     match_low_quality=False, ignore_iof_thr=-1),
                       sampler=dict(type="RandomSampler", num=proposals["rois"], pos_fraction=0.25, neg_pos_ub=-1,
                                    add_gt_as_proposals=True),
                       mask_size=28, pos_weight=-1, debug=False) for iou in CASCADE_IOUS]),
        test_cfg=dict(
            rpn=dict(nms_pre=proposals["test"], max_per_img=proposals["test"], nms=dict(type="nms", iou_threshold=0.7),
                     min_bbox_size=0),
            rcnn=dict(score_thr=proposals["score_thr"], nms=dict(type="nms", iou_threshold=0.5),
                      max_per_img=proposals["detections"],
                      mask_thr_binary=0.5)),
    )

    # Data: COCO-format json + image folders, the classes of the evaluation json.
    train_pipeline, test_pipeline = train_test_pipelines(hp, masks)
    metainfo = dict(classes=tuple(job.classes))
    workers = job.loader_workers

    def dataset(split, pipeline, test_mode):
        return dict(type="CocoDataset", data_root="", metainfo=metainfo, ann_file=str(split.annotations),
                    data_prefix=dict(img=str(split.images) + "/"), test_mode=test_mode, pipeline=pipeline,
                    filter_cfg=None if test_mode else dict(filter_empty_gt=True, min_size=32), backend_args=None)

    per_gpu = hp.per_gpu_batch
    accumulate = optimization_facts(hp, world_size)["accumulation"]
    train_dataloader = val_dataloader = evaluator = None
    if job.train is not None:
        train_dataloader = dict(batch_size=per_gpu, num_workers=workers, persistent_workers=workers > 0,
                                sampler=dict(type="DefaultSampler", shuffle=True),
                                batch_sampler=dict(type="AspectRatioBatchSampler"),
                                dataset=dataset(job.train, train_pipeline, False))
    if job.evaluate is not None:
        val_dataloader = dict(batch_size=1, num_workers=workers, persistent_workers=workers > 0, drop_last=False,
                              sampler=dict(type="DefaultSampler", shuffle=False),
                              dataset=dataset(job.evaluate, test_pipeline, True))
        evaluator = dict(type="CocoMetric", ann_file=str(job.evaluate.annotations), metric=list(job.iou_types),
                         classwise=False, format_only=False, backend_args=None)

    # Optimisation: the spec's optimizer, step schedule with linear warmup, AMP as the spec says.
    if hp.optimizer == "adamw":
        optimizer = dict(type="AdamW", lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
    elif hp.optimizer == "sgd":
        optimizer = dict(type="SGD", lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
    else:
        raise ValueError(f"detection supports adamw and sgd, not {hp.optimizer!r}")
    optim_wrapper: dict[str, Any] = dict(type="OptimWrapper", optimizer=optimizer, accumulative_counts=accumulate,
                                         clip_grad=dict(max_norm=hp.grad_clip, norm_type=2)
                                         if hp.grad_clip is not None else None)
    if hp.amp:
        optim_wrapper.update(type="AmpOptimWrapper", dtype=hp.amp_dtype,
                             loss_scale=dict(init_scale=FP16_INIT_SCALE) if hp.amp_dtype == "float16" else "dynamic")
    param_scheduler = []
    if hp.warmup_iters > 0:
        param_scheduler.append(dict(type="LinearLR", start_factor=WARMUP_START_FACTOR, by_epoch=False, begin=0,
                                    end=hp.warmup_iters))
    param_scheduler.append(dict(type="MultiStepLR", by_epoch=True, begin=0, end=hp.epochs,
                                milestones=list(hp.lr_steps), gamma=LR_DECAY))

    log_every = 1 if spec.smoke else 50
    cfg = dict(
        default_scope="mmdet",
        model=model,
        train_dataloader=train_dataloader, val_dataloader=val_dataloader, test_dataloader=val_dataloader,
        val_evaluator=evaluator, test_evaluator=evaluator,
        train_cfg=dict(type="EpochBasedTrainLoop", max_epochs=hp.epochs, val_interval=hp.eval_interval)
        if job.train is not None else None,
        val_cfg=dict(type="ValLoop") if job.evaluate is not None else None,
        test_cfg=dict(type="TestLoop") if job.evaluate is not None else None,
        optim_wrapper=optim_wrapper if job.train is not None else None,
        param_scheduler=param_scheduler if job.train is not None else None,
        auto_scale_lr=dict(enable=False, base_batch_size=hp.batch_size),
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=log_every),
            param_scheduler=dict(type="ParamSchedulerHook"),
            checkpoint=dict(type="CheckpointHook", interval=1, by_epoch=True, max_keep_ckpts=CHECKPOINTS_KEPT,
                            save_last=True),
            sampler_seed=dict(type="DistSamplerSeedHook")),
        env_cfg=dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
                     dist_cfg=dict(backend="nccl")),
        randomness=dict(seed=spec.seed, deterministic=False),
        visualizer=dict(type="DetLocalVisualizer", vis_backends=[dict(type="LocalVisBackend")]),  # named per run
        log_processor=dict(type="LogProcessor", window_size=log_every, by_epoch=True),
        log_level="INFO",
        work_dir=str(job.work_dir),
        load_from=None,
        resume=True,  # continue from the newest checkpoint in work_dir, if any
        launcher="pytorch" if world_size > 1 else "none",
    )
    cfg.update(extra or {})
    return cfg
