# VOC 2012 test-set submission (format-only): writes PNG predictions to work_dirs/format_results.
_base_ = './deeplabv3_r50-avgpool-d8_block-relu-6pct_4xb4-20k_voc12aug-512x512.py'
test_dataloader = dict(
    dataset=dict(ann_file='ImageSets/Segmentation/test.txt', pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(2048, 512), keep_ratio=True),
        dict(type='PackSegInputs'),
    ]))
test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'], format_only=True,
                      output_dir='work_dirs/format_results')
