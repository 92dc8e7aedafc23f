# ADE20K test-set submission (format-only, as mmseg's own configs do): writes PNG predictions
# to work_dirs/format_results for the benchmark server.
_base_ = './mobilenet-v2-relu-d8_deeplabv3_block-relu-6pct_4xb4-40k_ade20k-512x512.py'
test_dataloader = dict(
    dataset=dict(data_prefix=dict(img_path='images/testing'), pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(2048, 512), keep_ratio=True),
        dict(type='PackSegInputs'),
    ]))
test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'], format_only=True,
                      output_dir='work_dirs/format_results')
