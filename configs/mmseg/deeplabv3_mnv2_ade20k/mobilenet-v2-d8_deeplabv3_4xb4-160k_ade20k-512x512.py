# Baseline: mmseg's DeepLabV3 with a MobileNetV2 backbone (ReLU6) on ADE20K; the authors started
# from OpenMMLab's checkpoint below (34.08 mIoU, as in the paper).
_base_ = 'mmseg::mobilenet_v2/mobilenet-v2-d8_deeplabv3_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['block_relu_plugin'], allow_failed_imports=False)
published_checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/mobilenet_v2/deeplabv3_m-v2-d8_512x512_160k_ade20k/deeplabv3_m-v2-d8_512x512_160k_ade20k_20200825_223255-63986343.pth'  # noqa
