# Baseline: mmseg's DeepLabV3 with a MobileNetV2 backbone on ADE20K (paper: 34.08 mIoU).
_base_ = 'mmseg::mobilenet_v2/mobilenet-v2-d8_deeplabv3_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['block_relu_plugin'], allow_failed_imports=False)
