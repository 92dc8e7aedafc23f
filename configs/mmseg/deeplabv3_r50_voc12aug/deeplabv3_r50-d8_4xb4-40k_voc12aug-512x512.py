# Baseline: mmseg's DeepLabV3 ResNet50-V1c on Pascal VOC 2012 + aug; the authors started from
# OpenMMLab's checkpoint below (77.68 mIoU, as in the paper).
_base_ = 'mmseg::deeplabv3/deeplabv3_r50-d8_4xb4-40k_voc12aug-512x512.py'
custom_imports = dict(imports=['block_relu_plugin'], allow_failed_imports=False)
published_checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/deeplabv3/deeplabv3_r50-d8_512x512_40k_voc12aug/deeplabv3_r50-d8_512x512_40k_voc12aug_20200613_161546-2ae96e7e.pth'  # noqa
