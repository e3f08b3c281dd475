import numpy as np
import pytest
import torch

from keenvision.core.weights import load_weights, packaged_weights
from keenvision.mtcnn.caffe import CAFFE_FILES, CaffeFormatError, convert_mtcnn_caffe, read_caffemodel, to_caffe_layout
from keenvision.mtcnn.model import ONet, PNet, RNet


@pytest.fixture(scope="module")
def converted(data_dir):
    return convert_mtcnn_caffe(data_dir / "mtcnn_official")


@pytest.mark.parametrize("stage,network", [("pnet", PNet), ("rnet", RNet), ("onet", ONet)])
def test_every_converted_tensor_equals_its_caffe_blob(data_dir, converted, stage, network):
    layers = read_caffemodel(data_dir / "mtcnn_official" / CAFFE_FILES[stage])
    blobs = [blob for layer in layers for blob in layer.blobs]
    state = {k[len(stage) + 1:]: v for k, v in converted.items() if k.startswith(stage + ".")}
    model = network(landmarks=any(k.startswith("landmarks.") for k in state))
    back = to_caffe_layout(model, state)
    assert len(back) == len(blobs)
    for ours, theirs in zip(back, blobs):
        assert ours.size == theirs.size
        assert np.array_equal(ours.reshape(theirs.shape), theirs)


def test_conversion_transposes_kernels_for_row_major_images(data_dir, converted):
    # conv1 of P-Net: our kernel is the Caffe kernel with height and width swapped
    blob = read_caffemodel(data_dir / "mtcnn_official" / "det1.caffemodel")[0].blobs[0]
    assert torch.equal(converted["pnet.body.0.weight"], torch.from_numpy(blob).transpose(2, 3))


def test_shipped_weights_are_this_conversion(converted):
    shipped = load_weights(packaged_weights("mtcnn_caffe.safetensors"))
    assert shipped.keys() == converted.keys()
    assert all(torch.equal(shipped[k], converted[k]) for k in converted)


def test_non_caffe_file_is_rejected(tmp_path):
    (tmp_path / "det1.caffemodel").write_bytes(b"hello, not a protobuf \xff\xff\xff")
    with pytest.raises(CaffeFormatError):
        read_caffemodel(tmp_path / "det1.caffemodel")
    with pytest.raises(FileNotFoundError):
        convert_mtcnn_caffe(tmp_path / "missing")
