# Baseline: mmseg's DeepLabV3 ResNet50-V1c on Pascal VOC 2012 + aug (paper: 77.68 mIoU).
_base_ = 'mmseg::deeplabv3/deeplabv3_r50-d8_4xb4-40k_voc12aug-512x512.py'
custom_imports = dict(imports=['block_relu_plugin'], allow_failed_imports=False)
