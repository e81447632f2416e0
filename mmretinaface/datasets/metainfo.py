"""The face metainfo: one class, five landmarks and their left/right mirror pairs.

The single definition used by the dataset (``WiderFaceDataset.METAINFO``), the
checkpoints (``meta['dataset_meta']`` written by the converters), the
inference APIs and flip test-time augmentation. Plain Python (no imports), so
anything can use it cheaply.
"""

#: The five landmarks of the RetinaFace labels, in label order.
FACE_KEYPOINT_NAMES = ('left_eye', 'right_eye', 'nose', 'left_mouth', 'right_mouth')
#: ``flip_indices[i]``: the point that becomes point ``i`` in a mirrored image.
FACE_FLIP_INDICES = (1, 0, 2, 4, 3)

#: ``dataset_meta`` of the face models and datasets (copy before changing it).
FACE_METAINFO = dict(
    classes=('face', ),
    num_keypoints=len(FACE_KEYPOINT_NAMES),
    keypoint_names=FACE_KEYPOINT_NAMES,
    flip_indices=list(FACE_FLIP_INDICES))
