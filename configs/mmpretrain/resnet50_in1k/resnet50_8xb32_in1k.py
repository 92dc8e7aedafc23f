# Baseline: mmpretrain's ResNet50 on ImageNet-1k; the authors started from OpenMMLab's
# checkpoint below (76.55 % top-1, as in the paper).
_base_ = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'
custom_imports = dict(imports=['block_relu_plugin'], allow_failed_imports=False)
published_checkpoint = 'https://download.openmmlab.com/mmclassification/v0/resnet/resnet50_8xb32_in1k_20210831-ea4938fc.pth'  # noqa
input_size = (224, 224)
